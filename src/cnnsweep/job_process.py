"""Run one Hydra job in a fresh Python process, so a job that dies (killed, out of memory, segfault)
takes only itself down, and each job starts TensorFlow with its own device settings.

The parent (`run_job_in_process`) pickles what Hydra's own launchers hand to `run_job`; the child
(`python -m cnnsweep.job_process SPEC`) restores it, runs the job and pickles its status and return
value back; the parent rebuilds the JobReturn, or records the job failed when the child died.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import runpy
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cnnsweep import hydra_internals
from cnnsweep.errors import ConfigError
from cnnsweep.launching import JobOutcome, failed, outcome


@dataclass
class JobSpec:
    hydra_context: HydraContext
    config: DictConfig  # the job's composed config, with hydra.job.num set
    singleton_instances: dict[Any, Any]  # Hydra's singletons by class, Plugins left out by get_state
    task: tuple[str, str, Optional[str]]  # module, qualified name, and the file when it is __main__
    result_path: str


def task_reference(task_function: TaskFunction) -> tuple[str, str, Optional[str]]:
    """Name the task function so a fresh process can import it, even from a script run as __main__."""
    module = task_function.__module__
    script = getattr(sys.modules[module], "__file__", None) if module == "__main__" else None
    if module == "__main__" and script is None:
        raise ConfigError("the multirun's task was defined interactively; run it from a script such as src/run.py")
    return module, task_function.__qualname__, script


def load_task(reference: tuple[str, str, Optional[str]]) -> Callable[[DictConfig], Any]:
    module, qualname, script = reference
    if module == "__main__":
        namespace = runpy.run_path(str(script), run_name="__cnnsweep_job__")  # its __main__ block does not run
        function = namespace[qualname]
    else:
        function = getattr(importlib.import_module(module), qualname)
    return inspect.unwrap(function)  # hydra.main wraps the task; the job calls the task itself


def run_job_in_process(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    job_config: DictConfig,
    control_dir: Path,
    env: Optional[dict[str, str]] = None,
) -> JobOutcome:
    """Start the job in a child process and wait for it; a child that dies is a failed outcome."""
    control_dir.mkdir(parents=True, exist_ok=True)
    number = job_config.hydra.job.num
    job_dir = hydra_internals.job_dir(job_config)
    spec_path, result_path = control_dir / f"{number}.spec.pkl", control_dir / f"{number}.result.pkl"
    spec = JobSpec(hydra_context, job_config, hydra_internals.hydra_state(), task_reference(task_function),
                   str(result_path))
    spec_path.write_bytes(pickle.dumps(spec))
    process = subprocess.run(
        [sys.executable, "-m", "cnnsweep.job_process", str(spec_path)],
        env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    spec_path.unlink(missing_ok=True)
    if not result_path.is_file():
        error = f"job process died ({_describe_exit(process.returncode)}); it was killed or crashed outside Python"
        return failed(job_dir, error, hydra_internals.job_return(job_config, JobStatus.FAILED, RuntimeError(error)))
    status, value = pickle.loads(result_path.read_bytes())
    result_path.unlink()
    return outcome(hydra_internals.job_return(job_config, status, value), job_dir)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {-returncode}, {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _die_with_parent() -> None:
    """Linux: the job gets SIGTERM if the sweep process dies, instead of running on as an orphan."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_main(spec_path: str) -> None:
    spec: JobSpec = pickle.loads(Path(spec_path).read_bytes())
    result = hydra_internals.run_job_here(spec.hydra_context, load_task(spec.task), spec.config,
                                          spec.singleton_instances)
    value = hydra_internals.stored_value(result)
    if result.status == JobStatus.FAILED:  # exceptions may not pickle; keep their type and message
        value = RuntimeError(f"{type(value).__name__}: {value}")
    partial = Path(spec.result_path + ".partial")
    partial.write_bytes(pickle.dumps((result.status, value)))
    os.replace(partial, spec.result_path)


if __name__ == "__main__":
    _child_main(sys.argv[1])
