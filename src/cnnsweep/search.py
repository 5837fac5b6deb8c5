"""The Optuna search loop behind `-m sweeps=<name>`: ask, launch, tell, with resumable studies,
per-epoch pruning, failure tolerance and no batch barrier.

- `n_trials` is the study's total: a rerun of the same command counts the trials already finished
  (by any worker) and runs only the rest.
- Up to `n_jobs` trials run at once (by default as many as the launcher has slots: one per GPU with
  launcher=parallel, launcher.jobs with launcher=slurm) and a finished trial's slot takes the next
  trial immediately (see launcher_slots); other launchers get batches of `n_jobs`.
- Each trial's result is read from its metrics.json, so completed, pruned and failed trials (even a
  job process that was killed) reach the study with the right state, and none is left RUNNING.
- Trials left RUNNING by a sweep process on this host that has died are settled on the next start:
  finished ones from their metrics.json, the others failed and queued again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cnnsweep.config import METRIC_DIRECTIONS
from cnnsweep.errors import CnnsweepError, ConfigError
from cnnsweep.records import METRICS_FILE, write_atomic
from cnnsweep.search_space import as_override, grid_values, parse_search_space
from cnnsweep.study import STUDY_ENV, TRIAL_ENV, StudySpec, make_sampler

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER_ATTR = "cnnsweep_worker"  # host:pid of the sweep process that launched the trial
RUN_DIR_ATTR = "cnnsweep_run_dir"
ERROR_ATTR = "cnnsweep_error"
REQUEUED_ATTR = "cnnsweep_requeued_from"  # on a trial that reruns an interrupted one
AskTrial = Callable[[], "tuple[optuna.Trial, list[str]]"]


@dataclass
class SearchSettings:
    """hydra.sweeper.* of sweeps/*.yaml; see OptunaSearchConf for the defaults and meanings."""

    study_name: str
    storage: Union[str, dict[str, Any]]
    direction: Any
    metric: Any
    n_trials: int
    n_jobs: Optional[int]
    sampler: str
    sampler_options: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    max_failures: int = 5
    params: dict[str, str] = field(default_factory=dict)

    def study_spec(self) -> StudySpec:
        directions = _as_list(self.direction)
        metrics = _as_list(self.metric)
        if len(directions) != len(metrics):
            raise ConfigError(
                f"hydra.sweeper: {len(metrics)} metric(s) {metrics} but {len(directions)} direction(s) "
                f"{directions}; give one direction per metric"
            )
        for metric, direction in zip(metrics, directions):
            if metric not in METRIC_DIRECTIONS:
                raise ConfigError(f"hydra.sweeper.metric={metric}: not a metric runs report; "
                                  f"choose from {', '.join(METRIC_DIRECTIONS)}")
            if metric.startswith("test_"):
                raise ConfigError(f"hydra.sweeper.metric={metric}: searches never optimise the test set; "
                                  "use val_accuracy (or val_loss) with dataset.val_size=N")
            if direction not in ("maximize", "minimize"):
                raise ConfigError(f"hydra.sweeper.direction={direction}: must be maximize or minimize")
        return StudySpec(self.storage, self.study_name, directions, metrics, self.pruner, dict(self.pruner_options))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]


class Search:
    def __init__(self, settings: SearchSettings, launcher: Launcher, config: DictConfig) -> None:
        self.settings = settings
        self.launcher = launcher
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.config = config
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.failures: list[str] = []
        slots, self.concurrent_launches = launcher_slots(launcher)
        self.n_jobs = settings.n_jobs or slots
        if self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={settings.n_jobs}: must be a positive number of trials at once, "
                              "or null for one per launcher slot")

    def run(self, arguments: list[str]) -> None:
        settings = self.settings
        spec = settings.study_spec()
        params = [f"{key}={value}" for key, value in settings.params.items()] + list(arguments)
        distributions, fixed = parse_search_space(params)
        grid = grid_values(distributions) if settings.sampler == "grid" else None
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))  # marks a sweep folder
        study_file = spec.write(self.sweep_dir).resolve()
        study = optuna.create_study(
            study_name=spec.study_name, storage=spec.open_storage(), directions=spec.directions,
            sampler=make_sampler(settings.sampler, settings.sampler_options, settings.seed, grid),
            pruner=spec.make_pruner(), load_if_exists=True,
        )
        self._settle_orphans(study, spec)
        total = settings.n_trials if grid is None else min(settings.n_trials, math.prod(map(len, grid.values())))
        already = self._count(study, FINISHED)
        log.info("study %s in %s: %d of %d trials finished; sampler %s, pruner %s, %d at once",
                 spec.study_name, spec.storage_label, already, total, settings.sampler,
                 spec.pruner if len(spec.directions) == 1 else "none (multi-objective)", self.n_jobs)

        def ask() -> tuple[optuna.Trial, list[str]]:
            """A new trial and its job's overrides; its folder is named by its trial number."""
            trial = study.ask(fixed_distributions=distributions)
            trial.set_user_attr(WORKER_ATTR, self.worker)
            trial.set_user_attr(RUN_DIR_ATTR, str(self.sweep_dir / str(trial.number)))
            overrides = [as_override(key, value) for key, value in trial.params.items()]
            overrides += [f"{key}={value}" for key, value in fixed.items()]
            overrides += [f"+hydra.job.env_set.{STUDY_ENV}='{study_file}'",
                          f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
            return trial, overrides

        if self.concurrent_launches:
            self._run_continuously(study, spec, total, ask)
        else:
            self._run_in_batches(study, spec, total, ask)
        self._write_results(study, spec)
        if self._stopping():
            raise CnnsweepError(
                f"search stopped: {len(self.failures)} trials failed (hydra.sweeper.max_failures="
                f"{settings.max_failures}); last: {self.failures[-1]}; fix it, then rerun the same command to resume"
            )

    def _remaining(self, study: optuna.Study, total: int) -> int:
        """Trials still to start for the study's total, counting those other workers are running."""
        return total - self._count(study, FINISHED + (TrialState.RUNNING,))

    @staticmethod
    def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
        """Trials in `states`, leaving out interrupted ones that were queued again (their rerun counts)."""
        trials = study.get_trials(deepcopy=False)
        replaced = {trial.user_attrs.get(REQUEUED_ATTR) for trial in trials}
        return sum(trial.state in states and trial.number not in replaced for trial in trials)

    def _stopping(self) -> bool:
        return len(self.failures) > self.settings.max_failures

    def _run_continuously(self, study: optuna.Study, spec: StudySpec, total: int, ask: AskTrial) -> None:
        running: dict[Future, optuna.Trial] = {}
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            while True:
                while (len(running) < self.n_jobs and not self._stopping()
                       and self._remaining(study, total) > 0):
                    trial, overrides = ask()
                    running[pool.submit(self.launcher.launch, [overrides], trial.number)] = trial
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    self._tell(study, spec, running.pop(future), future.result()[0])

    def _run_in_batches(self, study: optuna.Study, spec: StudySpec, total: int, ask: AskTrial) -> None:
        """For launchers that run a whole batch per call: each batch waits for its slowest trial."""
        while not self._stopping():
            size = min(self.n_jobs, self._remaining(study, total))
            if size <= 0:
                return
            trials, job_overrides = zip(*(ask() for _ in range(size)))
            returns = self.launcher.launch(list(job_overrides), trials[0].number)
            for trial, job_return in zip(trials, returns):
                self._tell(study, spec, trial, job_return)

    def _tell(self, study: optuna.Study, spec: StudySpec, trial: optuna.Trial, job_return: JobReturn) -> None:
        run_dir = Path(str(job_return.hydra_cfg.hydra.runtime.output_dir))
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
        state, values, error = trial_outcome(run_dir, spec.metrics)
        if state is TrialState.FAIL:
            error = error or _job_error(job_return)
            trial.set_user_attr(ERROR_ATTR, error)
            self.failures.append(f"trial {trial.number}: {error}")
            log.warning("trial %d failed: %s", trial.number, error)
        _tell(study, trial, state, values)
        if state is TrialState.COMPLETE:
            log.info("trial %d: %s", trial.number, ", ".join(f"{m} {v:.4g}" for m, v in zip(spec.metrics, values)))
        elif state is TrialState.PRUNED:
            log.info("trial %d pruned", trial.number)

    def _settle_orphans(self, study: optuna.Study, spec: StudySpec) -> None:
        """RUNNING trials whose sweep process on this host has died: settle them from their run folders."""
        host = socket.gethostname()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = frozen.user_attrs.get(WORKER_ATTR, "")
            owner_host, _, pid = worker.rpartition(":")
            if owner_host != host or not pid.isdigit() or _alive(int(pid)):
                continue
            state, values, _ = trial_outcome(Path(frozen.user_attrs.get(RUN_DIR_ATTR, "")), spec.metrics)
            if state is TrialState.FAIL:
                _tell(study, frozen.number, TrialState.FAIL, None)
                study.enqueue_trial(frozen.params, user_attrs={REQUEUED_ATTR: frozen.number})
                log.warning("trial %d was interrupted with its sweep (%s); queued again", frozen.number, worker)
            else:
                _tell(study, frozen.number, state, values)
                log.info("trial %d finished after its sweep (%s) died; recorded as %s",
                         frozen.number, worker, state.name.lower())

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


def launcher_slots(launcher: Launcher) -> tuple[int, bool]:
    """Trials the launcher can run at once, and whether `launch` may be called from several threads, so
    that a finished trial's slot takes the next trial at once: cnnsweep's process launcher (its slots) and
    hydra-submitit-launcher (its array parallelism; every call builds its own executor) can. Others get
    one trial at a time unless hydra.sweeper.n_jobs asks for batches."""
    if getattr(launcher, "launches_concurrently", False):
        return int(getattr(launcher, "concurrency", 1)), True
    params = getattr(launcher, "params", None)
    submitit = any(cls.__module__.startswith("hydra_plugins.hydra_submitit_launcher") for cls in type(launcher).__mro__)
    if submitit and isinstance(params, dict):
        return int(params.get("array_parallelism") or 1), True
    return 1, False


def _tell(study: optuna.Study, trial: Union[optuna.Trial, int], state: TrialState,
          values: Optional[list[float]]) -> None:
    try:
        study.tell(trial, state=state, values=values)
    except RuntimeError as error:
        # The grid sampler calls study.stop() once the grid is covered, which Optuna only allows
        # inside study.optimize; the trial's state is stored before that, and the loop stops by count.
        if "Study.stop" not in str(error):
            raise


def trial_outcome(run_dir: Path, metrics: list[str]) -> tuple[TrialState, Optional[list[float]], Optional[str]]:
    """The Optuna state and objective values of a trial, from its run folder's metrics.json."""
    try:
        record = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError) as error:
        return TrialState.FAIL, None, f"no readable {METRICS_FILE} in {run_dir} ({error})"
    status = record.get("status")
    if status == "pruned":
        return TrialState.PRUNED, None, None
    if status != "completed":
        return TrialState.FAIL, None, record.get("error") or f"run ended with status {status!r}"
    values = [record.get(metric) for metric in metrics]
    if any(not isinstance(value, (int, float)) or not math.isfinite(value) for value in values):
        return TrialState.FAIL, None, f"objective {dict(zip(metrics, values))} is missing or not finite"
    return TrialState.COMPLETE, [float(value) for value in values], None


def _job_error(job_return: JobReturn) -> str:
    value = job_return._return_value  # noqa: SLF001  (reading .return_value of a failed job re-raises)
    return str(value) if isinstance(value, BaseException) else "the job failed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

