"""Optuna studies as cnnsweep uses them: storages, samplers and pruners by name, study.json, and the
bookkeeping that keeps a study true to its run folders.

study.json, written into a search's sweep folder, tells each trial's job process (and the report)
which study it belongs to and which pruner judges it, so pruning works across processes and machines.

A trial's state comes from its run folder's metrics.json (completed, pruned or failed, even when its
process was killed), and every trial records which sweep process runs it and where its folder is, so
trials left RUNNING by a sweep process that died on this host are settled when the next one starts.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import logging
import math
import os
import socket
import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import optuna
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from cnnsweep.credentials import location, redact, remember_password, stored_password, with_password
from cnnsweep.errors import ConfigError, first_line
from cnnsweep.processes import alive
from cnnsweep.run.records import COMPLETED, PRUNED, RunRecord, write_json
from cnnsweep.search.pruners import RecheckedHalvingPruner
from cnnsweep.search.settings import SAMPLER_CONFIGS

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"

# User attributes of each trial
WORKER_ATTR = "cnnsweep_worker"  # host:pid of the sweep process that launched the trial
RUN_DIR_ATTR = "cnnsweep_run_dir"
ERROR_ATTR = "cnnsweep_error"
REQUEUED_ATTR = "cnnsweep_requeued_from"  # on a trial that reruns an interrupted one
INTERRUPTED_ATTR = "cnnsweep_interrupted"  # on a trial stopped by Ctrl-C / SIGTERM of its sweep (state FAIL)
BASELINE_ATTR = "cnnsweep_baseline"  # on the trial that runs the composed config itself (trial 0)
WARM_START_ATTR = "cnnsweep_warm_start"  # on a trial repeating an earlier study's: "<study>#<trial number>"
JOURNAL_FILE = "optuna.journal"  # `storage: null`: the study of this sweep only, in its folder
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,  # needs the cmaes package, a dependency
    "nsgaii": optuna.samplers.NSGAIISampler,
    "qmc": optuna.samplers.QMCSampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "rechecked_halving": RecheckedHalvingPruner,  # successive halving, its promotions checked again later
    "percentile": optuna.pruners.PercentilePruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}


@dataclass
class StudySpec:
    storage: Union[None, str, dict[str, Any]]  # an Optuna storage URL, a `_target_` storage config; None: sweep_storage
    study_name: Optional[str]  # None until the study is created with a generated name
    directions: list[str]
    metrics: list[str]  # the metrics.json fields that are the objective values; none: the task's return value
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: Optional[int] = None  # RDB storages: seconds between heartbeats of a running trial
    grace_period: Optional[int] = None  # silent this long, a trial is stale: failed and queued again
    test_top_k: Optional[int] = None  # trials evaluate the test set only among the best K so far; None: all
    # The launcher runs a stopped trial again in its own folder (a Slurm requeue), continuing from its
    # checkpoints; else an interrupted trial is queued again as a new one, and its checkpoints serve nothing.
    trials_requeued: bool = False

    @property
    def objectives(self) -> list[str]:
        """The objectives' names: the metrics, or `value` (`value_0`, ...) for a returned objective."""
        if self.metrics:
            return self.metrics
        return ["value"] if len(self.directions) == 1 else [f"value_{index}" for index in range(len(self.directions))]

    def write(self, folder: Path) -> Path:
        """study.json, without the storage URL's password (see cnnsweep.credentials)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / STUDY_FILE
        remember_password(self.storage)
        write_json(path, {**asdict(self), "storage": redact(self.storage)})
        return path

    @classmethod
    def read(cls, path: Path) -> "StudySpec":
        return cls(**json.loads(path.read_text()))

    def open_storage(self) -> optuna.storages.BaseStorage:
        """An RDB storage for a URL (SQLite, PostgreSQL, ...), else the configured storage object."""
        try:
            if isinstance(self.storage, str):
                database = sqlite_database(self.storage)
                if database is not None:
                    database.parent.mkdir(parents=True, exist_ok=True)
                with warnings.catch_warnings():  # "heartbeat_interval is experimental" (since Optuna 2.9)
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        with_password(self.storage, stored_password()), heartbeat_interval=self.heartbeat_interval,
                        grace_period=self.grace_period, **{_STALE_CALLBACK: _requeue_stale})
            return instantiate(self.storage)
        except Exception as error:  # the driver's, SQLAlchemy's or Hydra's, with multi-line reports
            reason = first_line(error.__cause__ or error)
            raise ConfigError(
                f"hydra.sweeper.storage: cannot open {self.storage_label} ({reason}); check the URL, that the "
                "server is up and reachable, and for postgresql+psycopg:// that psycopg is installed"
            ) from error

    @property
    def storage_label(self) -> str:
        """The storage for logs and errors, without a password."""
        if isinstance(self.storage, str):
            return str(location(self.storage))
        backend = self.storage.get("log_storage")
        if isinstance(backend, dict) and backend.get("file_path"):
            return f"journal file {backend['file_path']}"
        return str(self.storage.get("_target_", "a custom storage"))

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if len(self.directions) > 1 or self.pruner == "none":
            return optuna.pruners.NopPruner()  # Optuna prunes single-objective studies only
        pruner = _by_name(PRUNERS, self.pruner, "hydra.sweeper.pruner")
        try:
            return pruner(**self.pruner_options)
        except TypeError as error:
            raise ConfigError(f"hydra.sweeper.pruner_options for pruner={self.pruner}: {error}; give that pruner's own "
                              "options, or hydra.sweeper.pruner_options=null for its defaults") from error


# Optuna 4.9 renamed the callback for trials whose heartbeat stopped.
_STALE_CALLBACK = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                   inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")


def sweep_storage(sweep_dir: Path) -> dict[str, Any]:
    """`storage: null`: an Optuna journal file in the sweep folder, so the study lasts as long as that
    folder (an in-memory study's meaning) while every trial's job process can still report to it."""
    return {"_target_": "optuna.storages.JournalStorage",
            "log_storage": {"_target_": "optuna.storages.journal.JournalFileBackend",
                            "file_path": str((sweep_dir / JOURNAL_FILE).resolve())}}


# hydra-optuna-sweeper's sampler configs pass these at these values; Optuna has deprecated them and
# behaves the same (or only warns less) without them, so they are left out and print no warnings.
_PLUGIN_DEFAULTS_OPTUNA_DEPRECATED = {
    "TPESampler": {"consider_prior": True, "prior_weight": 1.0, "consider_magic_clip": True,
                   "consider_endpoints": False, "warn_independent_sampling": True},
    "CmaEsSampler": {"inc_popsize": 2},  # only used with restart_strategy, itself deprecated
}


_SAMPLER_FIELDS = {name for sampler in SAMPLERS.values() for name in inspect.signature(sampler).parameters} | {
    config_field.name for config in SAMPLER_CONFIGS.values() for config_field in fields(config)}


def make_sampler(sampler: Union[str, dict[str, Any]], options: dict[str, Any], seed: Optional[int],
                 grid: Optional[dict[str, list[Any]]] = None) -> optuna.samplers.BaseSampler:
    """A sampler from its short name or a `hydra/sweeper/sampler` config, with `sampler_options` and
    `seed` on top; a config's null fields mean the sampler's own defaults."""
    if isinstance(sampler, str):
        factory, arguments, key = _by_name(SAMPLERS, sampler, "hydra.sweeper.sampler"), {}, "hydra.sweeper.sampler_options"
    else:
        factory, key = _sampler_class(str(sampler.get("_target_"))), "hydra.sweeper.sampler"
        deprecated = _PLUGIN_DEFAULTS_OPTUNA_DEPRECATED.get(factory.__name__, {})
        arguments = {name: value for name, value in sampler.items()
                     if not name.startswith("_") and value is not None and deprecated.get(name, ...) != value}
        arguments = _without_other_samplers_fields(factory, arguments)
    arguments.update(options)
    if seed is not None:
        if arguments.get("seed") not in (None, seed):
            raise ConfigError(f"hydra.sweeper.seed={seed} and hydra.sweeper.sampler.seed={arguments['seed']} "
                              "disagree; set one of them")
        arguments["seed"] = seed
    if factory is optuna.samplers.GridSampler:
        arguments["search_space"] = grid
    try:
        return factory(**arguments)
    except TypeError as error:
        raise ConfigError(f"{key}: {factory.__name__} {str(error).split(') ', 1)[-1]}; "
                          f"see its arguments in Optuna's documentation") from error


def _without_other_samplers_fields(factory: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """Fields another sampler takes (a sweeps file's `n_startup_trials` after `hydra/sweeper/sampler=random`
    on the command line) are dropped with a warning; a name no sampler takes stays, and fails as a typo."""
    accepted = inspect.signature(factory).parameters
    kept = {}
    for name, value in arguments.items():
        if name not in accepted and name in _SAMPLER_FIELDS:
            log.warning("hydra.sweeper.sampler.%s=%s does not apply to %s; ignored", name, value, factory.__name__)
        else:
            kept[name] = value
    return kept


def _sampler_class(target: str) -> type:
    if target.rpartition(".")[2] == "MOTPESampler" and not hasattr(optuna.samplers, "MOTPESampler"):
        raise ConfigError(f"hydra/sweeper/sampler=motpe: optuna {optuna.__version__} has no MOTPESampler "
                          "(removed in 4.0); use hydra/sweeper/sampler=tpe, which searches several objectives too")
    try:
        factory = _locate(target)
    except Exception as error:  # Hydra's multi-line ImportError
        raise ConfigError(f"hydra.sweeper.sampler._target_={target}: cannot import it; "
                          "give an optuna.samplers class or your own sampler's dotted path") from error
    if not (isinstance(factory, type) and issubclass(factory, optuna.samplers.BaseSampler)):
        raise ConfigError(f"hydra.sweeper.sampler._target_={target}: not an Optuna sampler class")
    return factory


def _by_name(table: dict[str, Any], name: str, key: str) -> Any:
    if name not in table:
        raise ConfigError(f"{key}={name}: unknown; choose one of {', '.join(table)}")
    return table[name]


def this_worker() -> str:
    """How trials name the sweep process that runs them."""
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_outcome(run_dir: Path, metrics: list[str]) -> tuple[TrialState, Optional[list[float]], Optional[str]]:
    """The Optuna state and objective values of a trial, from its run folder's metrics.json."""
    saved = RunRecord.read(run_dir)
    if saved.status == PRUNED:
        return TrialState.PRUNED, None, None
    if saved.status != COMPLETED:
        return TrialState.FAIL, None, saved.error or f"run ended with status {saved.status!r}"
    values = [saved.value(metric) for metric in metrics]
    if any(value is None for value in values):
        written = {metric: saved.fields.get(metric) for metric in metrics}
        return TrialState.FAIL, None, f"objective {written} is missing or not finite"
    return TrialState.COMPLETE, values, None


def returned_outcome(value: Any, objectives: int) -> tuple[TrialState, Optional[list[float]], Optional[str]]:
    """The state and values of a trial whose task returns its objective (any Hydra app, as with
    hydra-optuna-sweeper): a number, or one number per objective."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        values = [float(item) for item in items]
    except (TypeError, ValueError):
        return TrialState.FAIL, None, f"the task returned {value!r}, not {objectives} number(s)"
    if len(values) != objectives:
        return TrialState.FAIL, None, f"the task returned {len(values)} value(s) for {objectives} objective(s)"
    if not all(math.isfinite(item) for item in values):
        return TrialState.FAIL, None, f"the task returned {value!r}, which is not finite"
    return TrialState.COMPLETE, values, None


def count_trials(study: optuna.Study, states: Sequence[TrialState]) -> int:
    """Trials in `states`, leaving out interrupted ones that were queued again (their rerun counts)."""
    trials = study.get_trials(deepcopy=False)
    replaced = {trial.user_attrs.get(REQUEUED_ATTR) for trial in trials}
    return sum(trial.state in states and trial.number not in replaced for trial in trials)


def tell(study: optuna.Study, trial: Union[optuna.Trial, int], state: TrialState,
         values: Optional[list[float]]) -> None:
    try:
        study.tell(trial, state=state, values=values)
    except RuntimeError as error:
        # The grid sampler calls study.stop() once the grid is covered, which Optuna only allows
        # inside study.optimize; the trial's state is stored before that, and the search stops by count.
        if "Study.stop" not in str(error):
            raise


def settle_orphans(study: optuna.Study, metrics: list[str]) -> None:
    """RUNNING trials whose sweep process on this host has died: finished ones are recorded from their
    run folders; the others are failed and queued again once."""
    host = socket.gethostname()
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(frozen, host):
            continue
        worker = frozen.user_attrs.get(WORKER_ATTR)
        state, values, _ = trial_outcome(Path(frozen.user_attrs.get(RUN_DIR_ATTR, "")), metrics)
        if state is TrialState.FAIL or not metrics:  # a returned objective is lost with its sweep
            tell(study, frozen.number, TrialState.FAIL, None)
            requeue(study, frozen.number, frozen.params, frozen.user_attrs)
            log.warning("trial %d was interrupted with its sweep (%s); queued again", frozen.number, worker)
        else:
            tell(study, frozen.number, state, values)
            log.info("trial %d finished after its sweep (%s) died; recorded as %s",
                     frozen.number, worker, state.name.lower())


def requeue(study: optuna.Study, number: int, params: dict[str, Any], user_attrs: dict[str, Any]) -> None:
    """Queue an interrupted trial's parameters again, once; its rerun replaces it in the count."""
    study.enqueue_trial(params, user_attrs={REQUEUED_ATTR: number,
                                            **({BASELINE_ATTR: True} if user_attrs.get(BASELINE_ATTR) else {})})


def sqlite_database(url: Any) -> Optional[Path]:
    """The database file a `sqlite:///` storage URL names; None for any other storage and in-memory SQLite."""
    if not isinstance(url, str) or not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?")[0]
    return None if path in ("", ":memory:") else Path(path).expanduser()


@contextmanager
def one_asker_at_a_time(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """On SQLite, holds an exclusive lock on `<database>.lock` while a worker asks for a trial. Optuna takes a
    queued trial (the baseline, a warm start, a requeued one) by reading it as waiting and then marking it
    running, and SQLite starts no write transaction before the second step, so two workers could both take
    it and run it twice. Other storages lock the row (PostgreSQL, MySQL) or the file (journal) themselves."""
    database = sqlite_database(getattr(storage, "url", None))
    if database is None:
        yield
        return
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Heartbeats:
    """This sweep's running trials beat in the study's RDB storage (SQLite, PostgreSQL), and any stale
    trial, whichever worker ran it, is failed and queued again (Optuna's heartbeat, used with ask/tell).
    A no-op for storages without heartbeats (journal files) or with `heartbeat_interval: null`."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, interval: Optional[int]) -> None:
        self.study = study
        self.storage = storage
        self.interval = interval if interval and isinstance(storage, BaseHeartbeat) else None
        self._study_id = storage.get_study_id_from_name(study.study_name) if self.interval else None
        self._beating: dict[int, int] = {}  # trial number -> trial id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cnnsweep-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeats":
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def ask(self, fixed_distributions: dict[str, Any]) -> optuna.Trial:
        """study.ask, without Optuna's warning that heartbeats are meant for Study.optimize: this class
        beats for the trials an ask/tell loop runs."""
        with warnings.catch_warnings(), one_asker_at_a_time(self.storage):
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            return self.study.ask(fixed_distributions=fixed_distributions)

    def add(self, number: int) -> None:
        if self.interval:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
            with self._lock:
                self._beating[number] = trial_id

    def remove(self, number: int) -> None:
        with self._lock:
            self._beating.pop(number, None)

    def fail_stale(self) -> None:
        if self.interval:
            with warnings.catch_warnings():  # "fail_stale_trials is experimental" (since Optuna 2.9)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def others_running(self) -> int:
        """RUNNING trials of the study this sweep is not running (other workers', live or dead)."""
        if not self.interval:
            return 0
        with self._lock:
            ours = set(self._beating)
        return sum(trial.number not in ours for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _beat(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            with self._lock:
                trial_ids = list(self._beating.values())
            for trial_id in trial_ids:
                self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]


def _requeue_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's failed-trial callback for a trial whose sweep process stopped beating (died on any host)."""
    requeue(study, trial.number, trial.params, trial.user_attrs)
    log.warning("trial %d: its sweep process (%s) stopped its heartbeat; failed and queued again", trial.number,
                trial.user_attrs.get(WORKER_ATTR, "unknown"))


def _orphaned(trial: FrozenTrial, host: str) -> bool:
    owner_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    return owner_host == host and pid.isdigit() and not alive(int(pid))
