"""The Optuna search loop behind `-m sweeps=<name>`: ask, launch, tell, with resumable studies,
per-epoch pruning, failure tolerance and no batch barrier.

- `n_trials` is the study's total: a rerun of the same command counts the trials already finished
  (by any worker) and runs only the rest.
- Up to `n_jobs` trials run at once (by default as many as the launcher has slots) and a finished
  trial's slot takes the next trial immediately. The launcher is used only through the contract of
  cnnsweep.launch.contract, which also tells each trial's run folder.
- Each trial's result is read from its metrics.json (cnnsweep.search.study), or for an app that is not a cnnsweep
  run from its task's return value, so completed, pruned and failed trials (even a job process that was
  killed) reach the study with the right state, and none is left RUNNING; trials of a dead sweep
  process are settled on the next start (same host) or by any worker's heartbeat check.
- A new study's trial 0 is the composed config (the baseline; with the grid sampler, the grid's trial at
  its point); `timeout` stops launching; Ctrl-C or
  SIGTERM stops the search in order (cnnsweep.launch.interrupts); every bad setting is refused before trial 0.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.types import HydraContext
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from cnnsweep.errors import CnnsweepError, ConfigError
from cnnsweep.launch import hydra_internals
from cnnsweep.launch.contract import JobCannotStart, JobOutcome, TrialJob, TrialLauncher
from cnnsweep.launch.interrupts import SWEEP
from cnnsweep.launch.progress import Best, Progress, duration
from cnnsweep.run.records import INTERRUPTED, Objective, RunRecord
from cnnsweep.search.budget import BudgetFit, expected_trials
from cnnsweep.search.preflight import SearchPlan, check_settings, plan_search
from cnnsweep.search.results import log_time_summary, write_results, write_sweep_config
from cnnsweep.search.settings import OptunaSearchConf
from cnnsweep.search.space import SearchSpace, as_override
from cnnsweep.search.study import (
    BASELINE_ATTR,
    ERROR_ATTR,
    FINISHED,
    INTERRUPTED_ATTR,
    RUN_DIR_ATTR,
    WORKER_ATTR,
    Heartbeats,
    StudySpec,
    count_trials,
    requeue,
    returned_outcome,
    settle_orphans,
    sweep_storage,
    tell,
    this_worker,
    trial_outcome,
)
from cnnsweep.search.trial import STUDY_ENV, TRIAL_ENV
from cnnsweep.search.warm_start import enqueue_warm_start

# How often a worker with nothing left to launch looks again at the trials other workers of its study run: it
# ends, or takes a trial they gave back, this soon after, whatever the heartbeat interval.
OTHERS_POLL_SECONDS = 2.0

log = logging.getLogger(__name__)


class Search:
    """One run of a search: checked (cnnsweep.search.preflight), then its study opened, its trials asked,
    launched and told until the study's total, the time budget, the failure limit or an interrupt, then
    its results written (cnnsweep.search.results)."""

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
        self.trial_seconds: list[float] = []  # launch to result, of each trial this run finished
        self.cannot_start: Optional[JobCannotStart] = None  # the launcher's word that no trial would run
        self.best = Best()
        self.grid_baseline: Optional[dict[str, Any]] = None  # with the grid sampler: the baseline's point
        self.n_jobs = check_settings(settings, launcher.slots, config)

    def run(self, arguments: list[str]) -> None:
        plan = plan_search(self.settings, self.config, self.hydra_context, arguments)
        write_sweep_config(self.sweep_dir, self.config)
        study, storage, study_file = self._open_study(plan)
        progress = Progress(plan.total, "trials", already=count_trials(study, FINISHED), budget=self.settings.timeout)
        log.info("study %s in %s: %d of %d trials finished; sampler %s, pruner %s, %d at once%s",
                 plan.spec.study_name, plan.spec.storage_label, progress.already, plan.total,
                 type(plan.sampler).__name__, _pruner_label(plan.spec), self.n_jobs,
                 f", no new trial after {duration(self.settings.timeout)}" if self.settings.timeout else "")
        SWEEP.catch()  # Ctrl-C / SIGTERM: no new trial starts, running ones stop, record it and are queued again
        try:
            self._run_trials(study, storage, plan, study_file, progress)
        finally:
            SWEEP.release()
        write_results(self.sweep_dir, study, plan.spec)
        log_time_summary(study)
        self._end(study, plan.total, progress)

    def _open_study(self, plan: SearchPlan) -> tuple[optuna.Study, optuna.storages.BaseStorage, Path]:
        """The study, created or resumed, with trials of dead sweeps settled and the baseline queued; and
        study.json, which tells each trial's process how to report to it."""
        spec = plan.spec
        spec.trials_requeued = self.launcher.requeues
        if self.settings.warm_start.source and plan.grid is not None:
            raise ConfigError("hydra.sweeper.warm_start: the grid sampler visits every point once in its own order; "
                              "warm-start a tpe, random, cmaes or qmc search instead")
        if spec.storage is None:
            spec.storage = sweep_storage(self.sweep_dir)
        storage = spec.open_storage()
        study = optuna.create_study(study_name=spec.study_name, storage=storage, directions=spec.directions,
                                    sampler=plan.sampler, pruner=spec.make_pruner(), load_if_exists=True)
        spec.study_name = study.study_name
        study_file = spec.write(self.sweep_dir).resolve()
        plan.space.check_unchanged(study.study_name, _recorded_distributions(study))
        settle_orphans(study, spec.metrics)
        if self.settings.enqueue_baseline:
            self._enqueue_baseline(study, plan.space, plan.config_values, plan.grid)
        if self.settings.warm_start.source:
            enqueue_warm_start(study, self.settings.warm_start, plan.space.distributions)
        return study, storage, study_file

    def _run_trials(self, study: optuna.Study, storage: optuna.storages.BaseStorage, plan: SearchPlan,
                    study_file: Path, progress: Progress) -> None:
        """Ask, launch, tell: up to n_jobs trials at once, a freed slot taking the next trial at once."""
        running: dict[Future[JobOutcome], optuna.Trial] = {}
        launched: dict[int, float] = {}  # trial number -> when it was launched
        budget = BudgetFit(plan.sampler, plan.spec) if self.settings.fit_budget else None
        waiting_noted = False
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool, \
                Heartbeats(study, storage, plan.spec.heartbeat_interval) as heartbeats:
            while True:
                heartbeats.fail_stale()  # a dead worker's trials, on any host, are queued again
                may_start = not (self._stopping() or progress.out_of_time() or SWEEP.requested or self.cannot_start)
                while may_start and len(running) < self.n_jobs and self._remaining(study, plan.total) > 0:
                    if budget is not None:
                        self._fit_budget(budget, study, plan, progress, len(running))
                    trial, job = self._next_job(heartbeats, plan, study_file)
                    heartbeats.add(trial.number)
                    running[pool.submit(self.launcher.run_trial, job)] = trial
                    launched[trial.number] = time.monotonic()
                if not running:
                    others = heartbeats.others_running() if may_start else 0
                    if not others:
                        return
                    if not waiting_noted:  # the study's total needs them: they finish, or go stale and come here
                        log.info("waiting for %d trial(s) other workers run; a dead worker's are queued again "
                                 "after the grace period", others)
                        waiting_noted = True
                    time.sleep(OTHERS_POLL_SECONDS)
                    continue
                done, _ = wait(running, timeout=heartbeats.interval, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = running.pop(future)
                    heartbeats.remove(trial.number)
                    self.trial_seconds.append(time.monotonic() - launched.pop(trial.number))
                    try:
                        self._tell(study, plan.spec, trial, future.result())
                    except JobCannotStart as error:
                        self.cannot_start = self.cannot_start or error
                        self._requeue(study, trial, str(error), "could not start")
                if done:
                    log.info("%s", progress.line(count_trials(study, FINISHED), len(running),
                                                 count_trials(study, (TrialState.PRUNED,)),
                                                 count_trials(study, (TrialState.FAIL,)), self._best(study, plan.spec)))

    def _fit_budget(self, budget: BudgetFit, study: optuna.Study, plan: SearchPlan, progress: Progress,
                    running: int) -> None:
        """Start-ups fitted to the trials this search will end with (cnnsweep.search.budget); study.json
        written again when the pruner's changed, since each trial's process reads its pruner there."""
        timeout = self.settings.timeout
        pace = sum(self.trial_seconds) / len(self.trial_seconds) if self.trial_seconds else None
        expected = expected_trials(plan.total, count_trials(study, FINISHED), running,
                                   None if timeout is None else timeout - progress.elapsed(), pace, self.n_jobs)
        if budget.apply(expected):
            plan.spec.write(self.sweep_dir)

    def _next_job(self, heartbeats: Heartbeats, plan: SearchPlan, study_file: Path) -> tuple[optuna.Trial, TrialJob]:
        trial = heartbeats.ask(plan.space.distributions)
        plan.space.suggest(trial, self.config, plan.config_values)
        trial.set_user_attr(WORKER_ATTR, self.worker)
        if self.grid_baseline is not None and trial.params == self.grid_baseline:
            trial.set_user_attr(BASELINE_ATTR, True)
        overrides = [as_override(key, value) for key, value in trial.params.items()]
        overrides += [*plan.space.fixed_overrides(), f"+hydra.job.env_set.{STUDY_ENV}='{study_file}'",
                      f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
        started = lambda run_dir: trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))  # noqa: E731
        return trial, TrialJob(trial.number, tuple(overrides), started)

    def _end(self, study: optuna.Study, total: int, progress: Progress) -> None:
        """How this run of the search ended, when not with every trial it could run: interrupted, a trial
        that can never start, the failure limit, or the time budget."""
        settings = self.settings
        if SWEEP.requested:
            SWEEP.tally = (count_trials(study, FINISHED), total, "trials")
            SWEEP.stop_sweep(self.sweep_dir)
        if self.cannot_start is not None:
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

    def _enqueue_baseline(self, study: optuna.Study, space: SearchSpace, config_values: dict[str, Any],
                          grid: Optional[dict[str, list[Any]]]) -> None:
        """Trial 0 of a new study: the composed config itself, marked as the baseline (with the grid sampler,
        the grid's trial at the composed config's point)."""
        if any(trial.user_attrs.get(BASELINE_ATTR) for trial in study.get_trials(deepcopy=False)):
            return
        params, reason = space.baseline(config_values, grid)
        if reason is not None:
            log.warning("the composed config is not trial %d (%s); set hydra.sweeper.enqueue_baseline=false to "
                        "silence this", len(study.trials), reason)
            return
        described = " ".join(as_override(key, value) for key, value in params.items()) or "the composed config"
        if grid is not None:
            # Optuna's grid sampler does not count an enqueued trial as a visited point, so the baseline's
            # point would run twice and another not at all: the grid trial at that point is the baseline.
            self.grid_baseline = params
            log.info("the grid's point %s is the baseline (it runs in the grid's order)", described)
            return
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})
        log.info("trial %d is the baseline: %s", len(study.trials) - 1, described)

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
        if state is TrialState.FAIL and RunRecord.read(result.run_dir).status == INTERRUPTED:
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

    def _best(self, study: optuna.Study, spec: StudySpec) -> Optional[str]:
        """The study's best so far (other workers' and earlier runs' trials too), for the progress line."""
        if len(spec.directions) != 1 or not count_trials(study, (TrialState.COMPLETE,)):
            return None
        best = study.best_trial
        self.best.offer(f"trial {best.number}", Objective(spec.objectives[0], best.value, spec.directions[0]))
        return self.best.text


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
