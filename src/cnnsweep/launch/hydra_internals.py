"""Every use of Hydra's internals in one place: composing a job's config, running a job in another
process with the parent's Hydra state, and reading a failed job's exception.

Hydra's launcher and sweeper plugin API is public, but running a job outside Hydra's own launchers
needs pieces that Hydra's plugins use without promising them (its singletons, `run_job`, a JobReturn's
stored exception). They are stable across hydra-core 1.3.x, which pyproject.toml pins (`<1.4`);
tests/test_launching.py checks the installed version against that bound and exercises each one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnsweep.credentials import redact_hydra_node
from cnnsweep.errors import CnnsweepError

SUPPORTED_HYDRA = ">=1.3.2,<1.4"  # the bound in pyproject.toml, checked by the tests
_compose_lock = threading.Lock()  # Hydra's config loader keeps state while it composes


def compose_job_config(hydra_context: HydraContext, sweep_config: DictConfig, overrides: Sequence[str],
                       number: int) -> DictConfig:
    """The job's full config (task and hydra nodes), as Hydra's own launchers compose it; safe to call
    from several threads (one composition at a time)."""
    with _compose_lock:
        job_config = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = number
        job_config.hydra.job.num = number
    redact_hydra_node(job_config)  # the job's .hydra/hydra.yaml gets no password
    return job_config


def job_dir(job_config: DictConfig) -> Path:
    """The run folder of a composed multirun job: hydra.sweep.dir / hydra.sweep.subdir."""
    return Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)


def hydra_state() -> dict[str, Any]:
    """Hydra's singletons and resolvers of this process (config loader, job runtime, ...), to hand to a job
    process or a Slurm job: a copy whose HydraConfig holds no storage password, since it is pickled."""
    state = Singleton.get_state()
    hydra_config = state["instances"].get(HydraConfig)
    if hydra_config is not None and hydra_config.cfg is not None:
        redact_hydra_node(hydra_config.cfg)
    return state


def run_job_here(hydra_context: HydraContext, task_function: TaskFunction, job_config: DictConfig,
                 instances: dict[Any, Any]) -> JobReturn:
    """Run a job in this (fresh) process with the parent's Hydra state, as Hydra's launchers do."""
    setup_globals()  # registers Hydra's resolvers (now, hydra, ...), which this process keeps
    resolvers = Singleton.get_state()["omegaconf_resolvers"]
    Singleton.set_state({"instances": instances, "omegaconf_resolvers": resolvers})
    HydraConfig.instance().set_config(job_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=job_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def job_return(job_config: DictConfig, status: JobStatus, value: Any) -> JobReturn:
    """A JobReturn shaped as `run_job` makes it, for a job that ran in another process."""
    hydra_node = OmegaConf.masked_copy(job_config, "hydra")
    with open_dict(hydra_node):
        hydra_node.hydra.runtime.output_dir = str(job_dir(job_config))
    task_config = OmegaConf.masked_copy(job_config, [key for key in job_config if key != "hydra"])
    return JobReturn(overrides=list(job_config.hydra.overrides.task), cfg=task_config, hydra_cfg=hydra_node,
                     working_dir=str(job_dir(job_config)), task_name=job_config.hydra.job.name, status=status,
                     _return_value=value)


def stored_value(result: JobReturn) -> Any:
    """The task's return value, or the exception of a failed job. (`return_value` of a failed job
    re-raises its exception and prints to stderr, so the stored value is read directly.)"""
    return result._return_value  # noqa: SLF001


def job_error(result: JobReturn) -> Optional[str]:
    """Why a job failed, or None when it completed."""
    if result.status is JobStatus.COMPLETED:
        return None
    value = stored_value(result)
    if not isinstance(value, BaseException):
        return "the job failed"
    return str(value) if isinstance(value, CnnsweepError) else f"{type(value).__name__}: {value}"


def output_dir(result: JobReturn) -> Optional[Path]:
    """The run folder a job actually wrote to, as its own Hydra recorded it."""
    runtime = result.hydra_cfg.hydra.runtime if result.hydra_cfg is not None else None
    return Path(str(runtime.output_dir)) if runtime is not None and runtime.get("output_dir") else None


def instantiate_launcher(hydra_context: HydraContext, task_function: TaskFunction,
                         config: DictConfig) -> Launcher:
    """The launcher `hydra/launcher` selects, set up for this sweep."""
    return Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                   task_function=task_function)
