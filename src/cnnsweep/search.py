"""The Optuna search loop behind `-m sweeps=<name>`: ask, launch, tell, with resumable studies,
per-epoch pruning, failure tolerance and no batch barrier.

- `n_trials` is the study's total: a rerun of the same command counts the trials already finished
  (by any worker) and runs only the rest.
- Up to `n_jobs` trials run at once (by default as many as the launcher has slots) and a finished
  trial's slot takes the next trial immediately. The launcher is used only through the contract of
  cnnsweep.launching, which also tells each trial's run folder.
- Each trial's result is read from its metrics.json (cnnsweep.study), or for an app that is not a cnnsweep
  run from its task's return value, so completed, pruned and failed trials (even a job process that was
  killed) reach the study with the right state, and none is left RUNNING; trials of a dead sweep
  process are settled on the next start (same host) or by any worker's heartbeat check.
- A new study's trial 0 is the composed config (the baseline); `timeout` stops launching; Ctrl-C or
  SIGTERM stops the search in order (cnnsweep.interrupts); every bad setting is refused before trial 0.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

from cnnsweep import hydra_internals
from cnnsweep.credentials import redact_hydra_node
from cnnsweep.config import METRIC_DIRECTIONS, check_metric, load_run_config, objective_metric
from cnnsweep.data import check_source
from cnnsweep.errors import CnnsweepError, ConfigError
from cnnsweep.callbacks import write_sweep_leaderboard
from cnnsweep.launching import JobCannotStart, JobOutcome, TrialJob, TrialLauncher
from cnnsweep.plugin_config import OptunaSearchConf
from cnnsweep.records import write_atomic
from cnnsweep.interrupts import INTERRUPTED, SWEEP
from cnnsweep.progress import Progress, duration
from cnnsweep.search_space import SearchSpace, as_override, search_space
from cnnsweep.study import (
    BASELINE_ATTR, ERROR_ATTR, FINISHED, INTERRUPTED_ATTR, Heartbeats, RUN_DIR_ATTR, STUDY_ENV, TRIAL_ENV, WORKER_ATTR, StudySpec,
    count_trials, make_sampler, requeue, returned_outcome, run_status, settle_orphans, sweep_storage, tell, this_worker,
    trial_outcome,
)

log = logging.getLogger(__name__)


def study_spec(settings: OptunaSearchConf, job_config: DictConfig) -> StudySpec:
    """The study's objectives: hydra.sweeper.metric/direction, else the run's own objective (the
    composed job config's objective.metric and objective.direction), else, for an app that is not a
    cnnsweep run, the task's return value (minimised unless a direction says otherwise)."""
    dataset = job_config.get("dataset")
    val_size = int(dataset.val_size) if dataset is not None and "val_size" in dataset else None
    objective = job_config.get("objective")
    if settings.metric is None and objective is None:
        directions = _as_list(settings.direction if settings.direction is not None else "minimize")
        metrics: list[str] = []
    else:
        if settings.metric is None:
            metrics, key = [objective_metric(objective.metric, val_size or 0)], "objective.metric"
        else:
            metrics, key = _as_list(settings.metric), "hydra.sweeper.metric"
        if settings.direction is not None:
            directions = _as_list(settings.direction)
        elif settings.metric is None and objective.direction is not None:
            directions = [objective.direction]
        else:
            directions = [METRIC_DIRECTIONS.get(metric, "maximize") for metric in metrics]
        if len(directions) != len(metrics):
            raise ConfigError(f"hydra.sweeper: {len(metrics)} metric(s) {metrics} but {len(directions)} direction(s) "
                              f"{directions}; give one direction per metric")
        for metric in metrics:
            if metric.startswith("test_"):
                raise ConfigError(f"{key}={metric}: searches never optimise the test set; "
                                  "set dataset.val_size=N and search val_accuracy (or val_loss)")
            if val_size is not None:
                check_metric(metric, val_size, key)
    for direction in directions:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction}: must be maximize or minimize")
    return StudySpec(settings.storage, settings.study_name, directions, metrics, settings.pruner,
                     dict(settings.pruner_options), settings.heartbeat_interval, settings.grace_period)


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
        self.finished_here = 0
        self.cannot_start: Optional[JobCannotStart] = None  # the launcher's word that no trial would run
        self.n_jobs = launcher.slots if settings.n_jobs is None else settings.n_jobs
        if self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={settings.n_jobs}: must be a positive number of trials at once, "
                              "or null for one per launcher slot")
        rate = settings.max_failure_rate
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={rate}: must be between 0.0 and 1.0")
        chosen = config.hydra.runtime.choices.get("hydra/sweeper/sampler")
        if isinstance(settings.sampler, str) and chosen not in (None, "tpe", settings.sampler):
            raise ConfigError(f"hydra/sweeper/sampler={chosen} is replaced by `sampler: {settings.sampler}` (a sweeps "
                              f"file's short form); choose one: hydra.sweeper.sampler={chosen} replaces it")
        if settings.timeout is not None and settings.timeout <= 0:
            raise ConfigError(f"hydra.sweeper.timeout={settings.timeout}: must be a positive number of seconds, or null")

    def run(self, arguments: list[str]) -> None:
        settings = self.settings
        space = search_space(settings.params, arguments, conditional_params=settings.conditional_params,
                             old_search_space=settings.search_space, custom_search_space=settings.custom_search_space)
        job_config = self._compose(space.fixed_overrides())
        spec = study_spec(settings, job_config)
        config_values = self._check_keys(space, job_config)
        if "dataset" in job_config and "model" in job_config and "dataset.path" not in space.distributions:
            task_config = OmegaConf.masked_copy(job_config, [key for key in job_config if key != "hydra"])
            check_source(load_run_config(task_config).dataset)  # cnnsweep's own task: its data file exists
        grid = space.grid() if _is_grid(settings.sampler) else None
        sampler = make_sampler(settings.sampler, dict(settings.sampler_options), settings.seed, grid)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(redacted(self.config)))  # marks a sweep folder
        if spec.storage is None:
            spec.storage = sweep_storage(self.sweep_dir)
        storage = spec.open_storage()
        study = optuna.create_study(study_name=spec.study_name, storage=storage, directions=spec.directions,
                                    sampler=sampler, pruner=spec.make_pruner(), load_if_exists=True)
        spec.study_name = study.study_name
        study_file = spec.write(self.sweep_dir).resolve()
        space.check_unchanged(study.study_name, _recorded_distributions(study))
        settle_orphans(study, spec.metrics)
        if settings.enqueue_baseline:
            self._enqueue_baseline(study, space, config_values, grid)
        total = settings.n_trials if grid is None else min(settings.n_trials, math.prod(map(len, grid.values())))
        progress = Progress(total, "trials", already=count_trials(study, FINISHED), budget=settings.timeout)
        log.info("study %s in %s: %d of %d trials finished; sampler %s, pruner %s, %d at once%s",
                 spec.study_name, spec.storage_label, progress.already, total, type(sampler).__name__,
                 _pruner_label(spec), self.n_jobs,
                 f", no new trial after {duration(settings.timeout)}" if settings.timeout else "")

        def next_job(heartbeats: Heartbeats) -> tuple[optuna.Trial, TrialJob]:
            trial = heartbeats.ask(space.distributions)
            space.suggest(trial, self.config, config_values)
            trial.set_user_attr(WORKER_ATTR, self.worker)
            overrides = [as_override(key, value) for key, value in trial.params.items()]
            overrides += [*space.fixed_overrides(), f"+hydra.job.env_set.{STUDY_ENV}='{study_file}'",
                          f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
            started = lambda run_dir: trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))  # noqa: E731
            return trial, TrialJob(trial.number, tuple(overrides), started)

        running: dict[Future[JobOutcome], optuna.Trial] = {}
        SWEEP.catch()  # Ctrl-C / SIGTERM: no new trial starts, running ones stop, record it and are queued again
        waiting_noted = False
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool, \
                Heartbeats(study, storage, spec.heartbeat_interval) as heartbeats:
            while True:
                heartbeats.fail_stale()  # a dead worker's trials, on any host, are queued again
                may_start = not (self._stopping() or progress.out_of_time() or SWEEP.requested or self.cannot_start)
                while may_start and len(running) < self.n_jobs and self._remaining(study, total) > 0:
                    trial, job = next_job(heartbeats)
                    heartbeats.add(trial.number)
                    running[pool.submit(self.launcher.run_trial, job)] = trial
                if not running:
                    others = heartbeats.others_running() if may_start else 0
                    if not others:
                        break
                    if not waiting_noted:  # the study's total needs them: they finish, or go stale and come here
                        log.info("waiting for %d trial(s) other workers run; a dead worker's are queued again "
                                 "after the grace period", others)
                        waiting_noted = True
                    time.sleep(heartbeats.interval or 1)
                    continue
                done, _ = wait(running, timeout=heartbeats.interval, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = running.pop(future)
                    heartbeats.remove(trial.number)
                    try:
                        self._tell(study, spec, trial, future.result())
                    except JobCannotStart as error:
                        self.cannot_start = self.cannot_start or error
                        self._requeue(study, trial, str(error), "could not start")
                if done:
                    log.info("%s", progress.line(count_trials(study, FINISHED), len(running),
                                                 count_trials(study, (TrialState.PRUNED,)),
                                                 count_trials(study, (TrialState.FAIL,)), _best(study, spec)))
        SWEEP.release()
        self._write_results(study, spec)
        if SWEEP.requested:
            SWEEP.tally = (count_trials(study, FINISHED), total, "trials")
            SWEEP.stop_sweep(self.sweep_dir)
        if self.cannot_start is not None:
            write_sweep_leaderboard(self.sweep_dir)
            raise self.cannot_start
        if self._stopping():
            limit = (f"hydra.sweeper.max_failure_rate={settings.max_failure_rate}" if settings.max_failure_rate is not None
                     else f"hydra.sweeper.max_failures={settings.max_failures}")
            raise CnnsweepError(
                f"search stopped: {len(self.failures)} of {self.finished_here} trials failed ({limit}); last: "
                f"{self.failures[-1]}; fix it, then rerun the same command to resume"
            )
        if progress.out_of_time() and self._remaining(study, total) > 0:
            log.info("time budget of %s used (hydra.sweeper.timeout); %d trials still to run: rerun the same command "
                     "to go on", duration(settings.timeout or 0), self._remaining(study, total))

    def _compose(self, overrides: list[str]) -> DictConfig:
        try:
            return hydra_internals.compose_job_config(self.hydra_context, self.config, overrides, 0)
        except Exception as error:  # Hydra's composition report, several lines
            first = str(error).strip().splitlines()[0]
            raise ConfigError(f"hydra.sweeper.params: {' '.join(overrides)}: {first}") from error

    def _check_keys(self, space: SearchSpace, job_config: DictConfig) -> dict[str, Any]:
        """Every searched key exists (each choice of a config group too), before any trial trains; returns
        the composed config's values of the searched and condition keys."""
        keys = [*space.distributions, *(condition.key for condition, _ in space.conditional)]
        values = {key: config_value(job_config, key) for key in keys}
        for key, distribution in space.distributions.items():
            self._check_key(key, distribution, job_config, space.fixed_overrides(), "hydra.sweeper.params")
        for condition, distributions in space.conditional:
            overrides = [*space.fixed_overrides(), condition.text]
            condition_config = self._compose(overrides)
            for key, distribution in distributions.items():
                self._check_key(key, distribution, condition_config, overrides,
                                f"hydra.sweeper.conditional_params.{condition.text}")
                values.setdefault(key, config_value(job_config, key))
        return {key: value for key, value in values.items() if value is not MISSING_VALUE}

    def _check_key(self, key: str, distribution: BaseDistribution, job_config: DictConfig, overrides: list[str],
                   setting: str) -> None:
        if key.startswith(("+", "~")):
            return
        if config_value(job_config, key) is MISSING_VALUE:
            raise ConfigError(f"{setting}.{key}: no such key in the composed config; check its spelling, or "
                              f"write +{key} to add a new one")
        if key in job_config.hydra.runtime.choices and isinstance(distribution, CategoricalDistribution):
            for choice in distribution.choices:
                self._compose([*overrides, as_override(key, choice)])

    def _enqueue_baseline(self, study: optuna.Study, space: SearchSpace, config_values: dict[str, Any],
                          grid: Optional[dict[str, list[Any]]]) -> None:
        """Trial 0 of a new study: the composed config itself, marked as the baseline."""
        if any(trial.user_attrs.get(BASELINE_ATTR) for trial in study.get_trials(deepcopy=False)):
            return
        params, reason = space.baseline(config_values, grid)
        if reason is not None:
            log.warning("the composed config is not trial %d (%s); set hydra.sweeper.enqueue_baseline=false to "
                        "silence this", len(study.trials), reason)
            return
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})
        log.info("trial %d is the baseline: %s", len(study.trials) - 1,
                 " ".join(as_override(key, value) for key, value in params.items()) or "the composed config")

    def _remaining(self, study: optuna.Study, total: int) -> int:
        """Trials still to start for the study's total, counting those other workers are running."""
        return total - count_trials(study, FINISHED + (TrialState.RUNNING,))

    def _stopping(self) -> bool:
        rate = self.settings.max_failure_rate
        if rate is not None:
            return bool(self.failures) and len(self.failures) > rate * self.finished_here
        return len(self.failures) > self.settings.max_failures

    def _tell(self, study: optuna.Study, spec: StudySpec, trial: optuna.Trial, result: JobOutcome) -> None:
        self.finished_here += 1
        trial.set_user_attr(RUN_DIR_ATTR, str(result.run_dir))
        if spec.metrics:
            state, values, error = trial_outcome(result.run_dir, spec.metrics)
        elif result.error is not None or result.job_return is None:
            state, values, error = TrialState.FAIL, None, result.error
        else:
            state, values, error = returned_outcome(hydra_internals.stored_value(result.job_return),
                                                    len(spec.directions))
        if state is TrialState.FAIL and run_status(result.run_dir) == INTERRUPTED:
            self._requeue(study, trial, error or INTERRUPTED, INTERRUPTED)
            return
        if state is TrialState.FAIL:
            error = error or result.error or "the job failed"
            trial.set_user_attr(ERROR_ATTR, error)
            self.failures.append(f"trial {trial.number}: {error}")
            log.warning("trial %d failed: %s", trial.number, error)
        tell(study, trial, state, values)
        if state is TrialState.COMPLETE:
            log.info("trial %d: %s", trial.number, ", ".join(f"{m} {v:.4g}" for m, v in zip(spec.objectives, values)))
        elif state is TrialState.PRUNED:
            log.info("trial %d pruned", trial.number)

    def _requeue(self, study: optuna.Study, trial: optuna.Trial, error: str, what: str) -> None:
        """A trial stopped through no fault of its own: failed now, and queued again for the next run."""
        trial.set_user_attr(ERROR_ATTR, error)
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        tell(study, trial, TrialState.FAIL, None)
        requeue(study, trial.number, trial.params, trial.user_attrs)
        log.warning("trial %d %s; queued again for the next run", trial.number, what)

    def _write_results(self, study: optuna.Study, spec: StudySpec) -> None:
        """optimization_results.yaml: hydra-optuna-sweeper's keys (name, best_params and best_value, or
        solutions), with the trial numbers and run folders beside them."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("no trial of study %s has completed yet", spec.study_name)
            return
        results: dict[str, Any] = {"name": "optuna", "study_name": spec.study_name, "directions": spec.directions,
                                   "metrics": spec.objectives}
        if len(spec.directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number,
                           best_run_dir=best.user_attrs.get(RUN_DIR_ATTR), metric=spec.objectives[0])
            log.info("best trial %d: %s %.4f with %s (%s)", best.number, spec.objectives[0], best.value,
                     best.params, best.user_attrs.get(RUN_DIR_ATTR))
        else:
            results["solutions"] = [{"params": trial.params, "values": list(trial.values), "trial": trial.number,
                                     "run_dir": trial.user_attrs.get(RUN_DIR_ATTR)} for trial in study.best_trials]
            log.info("Pareto front of %d trials:", len(results["solutions"]))
            for point in results["solutions"]:
                log.info("  trial %d: %s with %s", point["trial"], dict(zip(spec.objectives, point["values"])),
                         point["params"])
        write_atomic(self.sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))


MISSING_VALUE = object()


def redacted(config: DictConfig) -> DictConfig:
    """The sweep config without the storage URL's password (cnnsweep.credentials)."""
    copy = config.copy()
    with open_dict(copy):
        redact_hydra_node(copy)
    return copy


def config_value(job_config: DictConfig, key: str) -> Any:
    """A key's value in a composed config: a config group's chosen option, else the node's value."""
    choices = job_config.hydra.runtime.choices
    if key in choices:
        return choices[key]
    value = OmegaConf.select(job_config, key, default=MISSING_VALUE)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _is_grid(sampler: Any) -> bool:
    target = sampler if isinstance(sampler, str) else str(sampler.get("_target_", ""))
    return target in ("grid", "optuna.samplers.GridSampler")


def _recorded_distributions(study: optuna.Study) -> dict[str, BaseDistribution]:
    """Each parameter's distribution as the study's latest trial of it recorded it."""
    recorded: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        recorded.update(trial.distributions)
    return recorded


def _pruner_label(spec: StudySpec) -> str:
    if len(spec.directions) > 1:
        return "none (multi-objective)"
    return spec.pruner if spec.metrics else "none (the task returns its objective)"


def _best(study: optuna.Study, spec: StudySpec) -> Optional[str]:
    if len(spec.directions) != 1 or not count_trials(study, (TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    return f"{spec.objectives[0]} {best.value:.4g} (trial {best.number})"
