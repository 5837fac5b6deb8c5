"""Run one Hydra job in a fresh Python process, so a job that dies (killed, out of memory, segfault)
takes only itself down, and each job starts TensorFlow with its own device settings.

The parent (`run_job_in_process`) pickles what Hydra's own launchers hand to `run_job`; the child
(`python -m cnnsweep.job_process SPEC`) restores it, runs the job and pickles its status and return
value back; the parent rebuilds the JobReturn.
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

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnsweep.records import mark_failed


class JobProcessDied(RuntimeError):
    """The job's process ended without reporting back (a signal, or an exit in native code)."""


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
    return module, task_function.__qualname__, script


def load_task(reference: tuple[str, str, Optional[str]]) -> Callable[[DictConfig], Any]:
    module, qualname, script = reference
    if module == "__main__":
        assert script is not None, "the task's script is unknown"
        namespace = runpy.run_path(script, run_name="__cnnsweep_job__")  # its __main__ block does not run
        function = namespace[qualname]
    else:
        function = getattr(importlib.import_module(module), qualname)
    return inspect.unwrap(function)  # hydra.main wraps the task; the job calls the task itself


def run_job_in_process(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    job_config: DictConfig,
    job_dir: Path,
    control_dir: Path,
    env: Optional[dict[str, str]] = None,
) -> JobReturn:
    """Start the job in a child process, wait for it, and return its JobReturn (FAILED if it died)."""
    control_dir.mkdir(parents=True, exist_ok=True)
    number = job_config.hydra.job.num
    spec_path, result_path = control_dir / f"{number}.spec.pkl", control_dir / f"{number}.result.pkl"
    instances = Singleton.get_state()["instances"]
    spec = JobSpec(hydra_context, job_config, instances, task_reference(task_function), str(result_path))
    spec_path.write_bytes(pickle.dumps(spec))
    process = subprocess.run(
        [sys.executable, "-m", "cnnsweep.job_process", str(spec_path)],
        env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    spec_path.unlink(missing_ok=True)
    if result_path.is_file():
        status, value = pickle.loads(result_path.read_bytes())
        result_path.unlink()
    else:
        reason = _describe_exit(process.returncode)
        status, value = JobStatus.FAILED, JobProcessDied(f"job process died ({reason}) before reporting; see {job_dir}")
        mark_failed(job_dir, f"job process died ({reason}); it was killed or crashed outside Python")
    hydra_node = OmegaConf.masked_copy(job_config, "hydra")  # the shape run_job gives hydra_cfg
    with open_dict(hydra_node):
        hydra_node.hydra.runtime.output_dir = str(job_dir)
    task_config = OmegaConf.masked_copy(job_config, [key for key in job_config if key != "hydra"])
    return JobReturn(
        overrides=list(job_config.hydra.overrides.task), cfg=task_config, hydra_cfg=hydra_node,
        working_dir=str(job_dir), task_name=job_config.hydra.job.name, status=status, _return_value=value,
    )


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
    setup_globals()  # registers Hydra's resolvers (now, hydra, ...), which this process keeps
    resolvers = Singleton.get_state()["omegaconf_resolvers"]
    Singleton.set_state({"instances": spec.singleton_instances, "omegaconf_resolvers": resolvers})
    HydraConfig.instance().set_config(spec.config)
    result = run_job(
        hydra_context=spec.hydra_context,
        task_function=load_task(spec.task),
        config=spec.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    value = result._return_value
    if result.status == JobStatus.FAILED:  # exceptions may not pickle; keep their type and message
        value = RuntimeError(f"{type(value).__name__}: {value}")
    partial = Path(spec.result_path + ".partial")
    partial.write_bytes(pickle.dumps((result.status, value)))
    os.replace(partial, spec.result_path)


if __name__ == "__main__":
    _child_main(sys.argv[1])
