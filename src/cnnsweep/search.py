"""The Optuna search loop behind `-m sweeps=<name>`: ask, launch, tell, with resumable studies,
per-epoch pruning, failure tolerance and no batch barrier.

- `n_trials` is the study's total: a rerun of the same command counts the trials already finished
  (by any worker) and runs only the rest.
- Up to `n_jobs` trials run at once (by default as many as the launcher has slots) and a finished
  trial's slot takes the next trial immediately. The launcher is used only through the contract of
  cnnsweep.launching, which also tells each trial's run folder.
- Each trial's result is read from its metrics.json (cnnsweep.study), so completed, pruned and failed
  trials (even a job process that was killed) reach the study with the right state, and none is left
  RUNNING; trials a dead sweep process left RUNNING are settled on the next start.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cnnsweep import hydra_internals
from cnnsweep.config import METRIC_DIRECTIONS, check_metric, objective_metric
from cnnsweep.errors import CnnsweepError, ConfigError
from cnnsweep.launching import JobOutcome, TrialJob, TrialLauncher
from cnnsweep.plugin_config import OptunaSearchConf
from cnnsweep.records import write_atomic
from cnnsweep.search_space import as_override, grid_values, parse_search_space
from cnnsweep.study import (
    ERROR_ATTR, FINISHED, RUN_DIR_ATTR, STUDY_ENV, TRIAL_ENV, WORKER_ATTR, StudySpec, count_trials,
    make_sampler, settle_orphans, tell, this_worker, trial_outcome,
)

log = logging.getLogger(__name__)


def study_spec(settings: OptunaSearchConf, job_config: DictConfig) -> StudySpec:
    """The study's objectives: hydra.sweeper.metric/direction, else the run's own objective (the
    composed job config's objective.metric and objective.direction)."""
    val_size = int(job_config.dataset.val_size)
    if settings.metric is None:
        metrics = [objective_metric(job_config.objective.metric, val_size)]
        key = "objective.metric"
    else:
        metrics, key = _as_list(settings.metric), "hydra.sweeper.metric"
    if settings.direction is not None:
        directions = _as_list(settings.direction)
    elif settings.metric is None and job_config.objective.direction is not None:
        directions = [job_config.objective.direction]
    else:
        directions = [METRIC_DIRECTIONS.get(metric, "maximize") for metric in metrics]
    if len(directions) != len(metrics):
        raise ConfigError(f"hydra.sweeper: {len(metrics)} metric(s) {metrics} but {len(directions)} direction(s) "
                          f"{directions}; give one direction per metric")
    for metric, direction in zip(metrics, directions):
        if metric.startswith("test_"):
            raise ConfigError(f"{key}={metric}: searches never optimise the test set; "
                              "set dataset.val_size=N and search val_accuracy (or val_loss)")
        check_metric(metric, val_size, key)
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: must be maximize or minimize")
    return StudySpec(settings.storage, settings.study_name, directions, metrics, settings.pruner,
                     dict(settings.pruner_options))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Search:
    def __init__(self, settings: OptunaSearchConf, launcher: TrialLauncher, config: DictConfig,
                 hydra_context: HydraContext) -> None:
        self.settings = settings
        self.launcher = launcher
        self.config = config
        self.hydra_context = hydra_context
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.worker = this_worker()
        self.failures: list[str] = []
        self.n_jobs = launcher.slots if settings.n_jobs is None else settings.n_jobs
        if self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={settings.n_jobs}: must be a positive number of trials at once, "
                              "or null for one per launcher slot")

    def run(self, arguments: list[str]) -> None:
        settings = self.settings
        params = [f"{key}={value}" for key, value in settings.params.items()] + list(arguments)
        distributions, fixed = parse_search_space(params)
        fixed_overrides = [f"{key}={value}" for key, value in fixed.items()]
        spec = study_spec(settings, hydra_internals.compose_job_config(self.hydra_context, self.config,
                                                                       fixed_overrides, 0))
        grid = grid_values(distributions) if settings.sampler == "grid" else None
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))  # marks a sweep folder
        study_file = spec.write(self.sweep_dir).resolve()
        study = optuna.create_study(
            study_name=spec.study_name, storage=spec.open_storage(), directions=spec.directions,
            sampler=make_sampler(settings.sampler, dict(settings.sampler_options), settings.seed, grid),
            pruner=spec.make_pruner(), load_if_exists=True,
        )
        settle_orphans(study, spec.metrics)
        total = settings.n_trials if grid is None else min(settings.n_trials, math.prod(map(len, grid.values())))
        log.info("study %s in %s: %d of %d trials finished; sampler %s, pruner %s, %d at once",
                 spec.study_name, spec.storage_label, count_trials(study, FINISHED), total, settings.sampler,
                 spec.pruner if len(spec.directions) == 1 else "none (multi-objective)", self.n_jobs)

        def next_job() -> tuple[optuna.Trial, TrialJob]:
            trial = study.ask(fixed_distributions=distributions)
            trial.set_user_attr(WORKER_ATTR, self.worker)
            overrides = [as_override(key, value) for key, value in trial.params.items()]
            overrides += [*fixed_overrides, f"+hydra.job.env_set.{STUDY_ENV}='{study_file}'",
                          f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
            started = lambda run_dir: trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))  # noqa: E731
            return trial, TrialJob(trial.number, tuple(overrides), started)

        running: dict[Future[JobOutcome], optuna.Trial] = {}
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            while True:
                while len(running) < self.n_jobs and not self._stopping() and self._remaining(study, total) > 0:
                    trial, job = next_job()
                    running[pool.submit(self.launcher.run_trial, job)] = trial
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    self._tell(study, spec, running.pop(future), future.result())
        self._write_results(study, spec)
        if self._stopping():
            raise CnnsweepError(
                f"search stopped: {len(self.failures)} trials failed (hydra.sweeper.max_failures="
                f"{settings.max_failures}); last: {self.failures[-1]}; fix it, then rerun the same command to resume"
            )

    def _remaining(self, study: optuna.Study, total: int) -> int:
        """Trials still to start for the study's total, counting those other workers are running."""
        return total - count_trials(study, FINISHED + (TrialState.RUNNING,))

    def _stopping(self) -> bool:
        return len(self.failures) > self.settings.max_failures

    def _tell(self, study: optuna.Study, spec: StudySpec, trial: optuna.Trial, result: JobOutcome) -> None:
        trial.set_user_attr(RUN_DIR_ATTR, str(result.run_dir))
        state, values, error = trial_outcome(result.run_dir, spec.metrics)
        if state is TrialState.FAIL:
            error = error or result.error or "the job failed"
            trial.set_user_attr(ERROR_ATTR, error)
            self.failures.append(f"trial {trial.number}: {error}")
            log.warning("trial %d failed: %s", trial.number, error)
        tell(study, trial, state, values)
        if state is TrialState.COMPLETE:
            log.info("trial %d: %s", trial.number, ", ".join(f"{m} {v:.4g}" for m, v in zip(spec.metrics, values)))
        elif state is TrialState.PRUNED:
            log.info("trial %d pruned", trial.number)

    def _write_results(self, study: optuna.Study, spec: StudySpec) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("no trial of study %s has completed yet", spec.study_name)
            return
        if len(spec.directions) == 1:
            best = study.best_trial
            results: dict[str, Any] = {"study_name": spec.study_name, "metric": spec.metrics[0],
                                       "best_trial": best.number, "best_value": best.value,
                                       "best_params": best.params,
                                       "best_run_dir": best.user_attrs.get(RUN_DIR_ATTR)}
            log.info("best trial %d: %s %.4f with %s (%s)", best.number, spec.metrics[0], best.value,
                     best.params, best.user_attrs.get(RUN_DIR_ATTR))
        else:
            front = [{"trial": trial.number, "values": dict(zip(spec.metrics, trial.values)),
                      "params": trial.params, "run_dir": trial.user_attrs.get(RUN_DIR_ATTR)}
                     for trial in study.best_trials]
            results = {"study_name": spec.study_name, "metrics": spec.metrics,
                       "directions": spec.directions, "pareto_front": front}
            log.info("Pareto front of %d trials:", len(front))
            for point in front:
                log.info("  trial %d: %s with %s", point["trial"], point["values"], point["params"])
        write_atomic(self.sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
