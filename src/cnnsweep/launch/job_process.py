"""Jobs in processes of their own, so a job that dies (killed, out of memory, segfault) takes only itself
down, and each slot's TensorFlow starts with that slot's devices and threads.

A Worker is one such process (`python -m cnnsweep.launch.job_process --serve`), started with its slot's
environment; it imports the task (and TensorFlow) once and runs job after job: the parent pickles what
Hydra's own launchers hand to `run_job` into a spec file and names it on a command pipe, the worker
runs the job, pickles its status and return value back and answers on a reply pipe. Between jobs
nothing carries over that a job sets: Hydra switches log files and restores the environment around
each job, the task resets Keras, seeds and precision (cnnsweep.run.hardware), and the dataset cache is keyed
by file. A worker that dies, or runs past the job time limit, fails its job with the reason and is
replaced for the next job; one that has run its quota of jobs, or grown past the memory limit, is
replaced after its job. With a quota of one job, every job gets a fresh process.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import pickle
import runpy
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cnnsweep.errors import ConfigError
from cnnsweep.launch import hydra_internals
from cnnsweep.launch.contract import JobOutcome, describe_exit, failed, outcome
from cnnsweep.launch.interrupts import SWEEP
from cnnsweep.run.stops import forget_pending_stop, interrupt_once


@dataclass
class JobSpec:
    hydra_context: HydraContext
    config: DictConfig  # the job's composed config, with hydra.job.num set
    singleton_instances: dict[Any, Any]  # Hydra's singletons by class, Plugins left out by get_state
    task: tuple[str, str, Optional[str]]  # module, qualified name, and the file when it is __main__
    result_path: str


@dataclass(frozen=True)
class WorkerLimits:
    jobs: int  # jobs per worker process before a fresh one takes over
    job_timeout_s: Optional[float]  # a job running longer fails, and its worker is replaced
    memory_bytes: Optional[int]  # a worker larger than this after a job is replaced


def worker_limits(jobs_per_worker: int, job_timeout_min: Optional[float],
                  max_memory_gb: Optional[float]) -> WorkerLimits:
    """launcher.jobs_per_worker, launcher.job_timeout_min and launcher.worker_max_memory_gb, checked."""
    if isinstance(jobs_per_worker, bool) or not isinstance(jobs_per_worker, int) or jobs_per_worker < 1:
        raise ConfigError(f"launcher.jobs_per_worker={jobs_per_worker}: must be a positive number of jobs "
                          "(1: a fresh process for every job)")
    for key, value in (("launcher.job_timeout_min", job_timeout_min), ("launcher.worker_max_memory_gb", max_memory_gb)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"{key}={value}: must be a positive number, or null for no limit")
    return WorkerLimits(jobs_per_worker, None if job_timeout_min is None else 60.0 * job_timeout_min,
                        None if max_memory_gb is None else int(max_memory_gb * 2**30))


def task_reference(task_function: TaskFunction) -> tuple[str, str, Optional[str]]:
    """Name the task function so a fresh process can import it, even from a script run as __main__."""
    module = task_function.__module__
    script = getattr(sys.modules[module], "__file__", None) if module == "__main__" else None
    if module == "__main__" and script is None:
        raise ConfigError("the multirun's task was defined interactively; run it from a script such as src/run.py")
    return module, task_function.__qualname__, script


@functools.lru_cache(maxsize=4)
def load_task(reference: tuple[str, str, Optional[str]]) -> Callable[[DictConfig], Any]:
    module, qualname, script = reference
    if module == "__main__":
        namespace = runpy.run_path(str(script), run_name="__cnnsweep_job__")  # its __main__ block does not run
        function = namespace[qualname]
    else:
        function = getattr(importlib.import_module(module), qualname)
    return inspect.unwrap(function)  # hydra.main wraps the task; the job calls the task itself


class Worker:
    """One slot's job process, started when a job needs it; used by one thread at a time."""

    def __init__(self, env: dict[str, str], limits: WorkerLimits) -> None:
        self.env = env
        self.limits = limits
        self.process: Optional[subprocess.Popen] = None
        self.jobs_run = 0  # by the current (or last) process
        self.last_pid: Optional[int] = None  # the process that ran the last job
        self.key: Any = None  # what the jobs it ran must share with the next (see run)
        self._commands: Any = None
        self._replies: Any = None

    def use_environment(self, env: dict[str, str]) -> None:
        """Start the next job's process with `env`: the current process ends first when it had another."""
        if env != self.env:
            self.stop()
            self.env = env

    def run(self, hydra_context: HydraContext, task_function: TaskFunction, job_config: DictConfig,
            control_dir: Path, key: Any = None) -> JobOutcome:
        """Run the job in this worker (a fresh process when it has none, or when `key`, the settings a
        process cannot change once its first job set them, differs from its previous job's)."""
        if self.process is not None and key != self.key:
            self.stop()
        if self.process is None:
            self._start()
            self.key = key
        assert self.process is not None
        self.last_pid = self.process.pid
        control_dir.mkdir(parents=True, exist_ok=True)
        number = job_config.hydra.job.num
        job_dir = hydra_internals.job_dir(job_config)
        spec_path, result_path = control_dir / f"{number}.spec.pkl", control_dir / f"{number}.result.pkl"
        spec = JobSpec(hydra_context, job_config, hydra_internals.hydra_state()["instances"], task_reference(task_function),
                       str(result_path))
        spec_path.write_bytes(pickle.dumps(spec))
        self.jobs_run += 1
        SWEEP.add_job_process(self.process.pid)  # a signal to the sweep reaches this job
        try:
            ended = self._send_and_wait(spec_path)
        finally:
            SWEEP.remove_job_process(self.last_pid)
            spec_path.unlink(missing_ok=True)
        if ended is not None:
            # To Hydra's sweepers the job ended as a failed run does inside a multirun: with NaN, so a grid
            # goes on; its metrics.json and the outcome's error say why.
            return failed(job_dir, ended, hydra_internals.job_return(job_config, JobStatus.COMPLETED, math.nan))
        status, value = pickle.loads(result_path.read_bytes())
        result_path.unlink()
        if self.jobs_run >= self.limits.jobs or self._too_large():
            self.stop()
        return outcome(hydra_internals.job_return(job_config, status, value), job_dir)

    def _send_and_wait(self, spec_path: Path) -> Optional[str]:
        """None when the worker answered; else why the job ended without an answer."""
        assert self.process is not None
        try:
            self._commands.write(f"{spec_path}\n")
            self._commands.flush()
        except BrokenPipeError:
            pass  # the worker is gone; reading its reply says how
        timeout = self.limits.job_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._replies], [], [], wait)
            if not ready:
                self.stop(kill=True)
                return (f"job ran past the time limit ({timeout / 60:g} min, launcher.job_timeout_min) and was "
                        "stopped; raise the limit or make the job shorter")
            if self._replies.readline():
                return None
            returncode = self.process.wait()
            self._forget()
            return f"job process died ({describe_exit(returncode)}); it was killed or crashed outside Python"

    def _start(self) -> None:
        commands_read, commands_write = os.pipe()
        replies_read, replies_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnsweep.launch.job_process", "--serve", str(commands_read), str(replies_write)],
            env={**os.environ, **self.env}, pass_fds=(commands_read, replies_write),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._commands = os.fdopen(commands_write, "w")
        self._replies = os.fdopen(replies_read, "r")
        self.jobs_run = 0

    def stop(self, kill: bool = False) -> None:
        """End the process: closing its command pipe lets it exit after its current job; `kill` does not wait."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        try:
            self._commands.close()
        except BrokenPipeError:
            pass
        self.process.wait()
        self._forget()

    def _forget(self) -> None:
        for pipe in (self._commands, self._replies):
            try:
                pipe.close()
            except (BrokenPipeError, OSError):
                pass
        self.process = None

    def _too_large(self) -> bool:
        limit = self.limits.memory_bytes
        return limit is not None and self.process is not None and resident_bytes(self.process.pid) > limit


def resident_bytes(pid: int) -> int:
    """The process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the sweep process dies, instead of running on as an orphan."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _run_spec(spec_path: str) -> None:
    spec: JobSpec = pickle.loads(Path(spec_path).read_bytes())
    result = hydra_internals.run_job_here(spec.hydra_context, load_task(spec.task), spec.config,
                                          spec.singleton_instances)
    value = hydra_internals.stored_value(result)
    if result.status == JobStatus.FAILED:  # exceptions may not pickle; keep their type and message
        value = RuntimeError(f"{type(value).__name__}: {value}")
    partial = Path(spec.result_path + ".partial")
    partial.write_bytes(pickle.dumps((result.status, value)))
    os.replace(partial, spec.result_path)


def _serve(commands_fd: int, replies_fd: int) -> None:
    """The worker's loop: one spec path per line in, one line out when its result is written. Ctrl-C
    (SIGINT) reaches a running job, which records itself interrupted; between jobs it is ignored."""
    with os.fdopen(commands_fd, "r") as commands, os.fdopen(replies_fd, "w") as replies:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for line in commands:
            forget_pending_stop()
            signal.signal(signal.SIGINT, interrupt_once)
            try:
                _run_spec(line.strip())
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            replies.write("done\n")
            replies.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[2]), int(sys.argv[3]))
