"""Optuna studies as cnnsweep uses them: storages, samplers and pruners by name, and study.json.

study.json, written into a search's sweep folder, tells each trial's job process (and the report)
which study it belongs to and which pruner judges it, so pruning works across processes and machines.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import optuna
from hydra.utils import instantiate

from cnnsweep.errors import ConfigError
from cnnsweep.records import write_json

STUDY_FILE = "study.json"
STUDY_ENV = "CNNSWEEP_STUDY"  # path of study.json, set for each trial's job
TRIAL_ENV = "CNNSWEEP_TRIAL"  # the trial number, set for each trial's job


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
    "percentile": optuna.pruners.PercentilePruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}


@dataclass
class StudySpec:
    storage: Union[str, dict[str, Any]]  # an Optuna storage URL, or a `_target_` config of a storage
    study_name: str
    directions: list[str]
    metrics: list[str]  # the metrics.json fields that are the study's objective values
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / STUDY_FILE
        write_json(path, asdict(self))
        return path

    @classmethod
    def read(cls, path: Path) -> "StudySpec":
        return cls(**json.loads(path.read_text()))

    def open_storage(self) -> optuna.storages.BaseStorage:
        """An RDB storage for a URL (SQLite, PostgreSQL, ...), else the configured storage object."""
        try:
            if isinstance(self.storage, str):
                if self.storage.startswith("sqlite:///"):
                    Path(self.storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
                return optuna.storages.RDBStorage(self.storage)
            return instantiate(self.storage)
        except Exception as error:  # the driver's, SQLAlchemy's or Hydra's, with multi-line reports
            text = str(error.__cause__ or error).strip()
            reason = text.splitlines()[0] if text else type(error).__name__
            raise ConfigError(
                f"hydra.sweeper.storage: cannot open {self.storage_label} ({reason}); check the URL, that the "
                "server is up and reachable, and for postgresql+psycopg:// that psycopg is installed"
            ) from error

    @property
    def storage_label(self) -> str:
        """The storage for logs and errors, without a password."""
        if isinstance(self.storage, str):
            scheme, _, rest = self.storage.partition("://")
            return f"{scheme}://{rest.split('@')[-1]}" if "@" in rest else self.storage
        return str(self.storage.get("_target_", "a custom storage"))

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if len(self.directions) > 1 or self.pruner == "none":
            return optuna.pruners.NopPruner()  # Optuna prunes single-objective studies only
        pruner = _by_name(PRUNERS, self.pruner, "hydra.sweeper.pruner")
        try:
            return pruner(**self.pruner_options)
        except TypeError as error:
            raise ConfigError(f"hydra.sweeper.pruner_options for pruner={self.pruner}: {error}") from error


def make_sampler(name: str, options: dict[str, Any], seed: Optional[int],
                 grid: Optional[dict[str, list[Any]]] = None) -> optuna.samplers.BaseSampler:
    factory = _by_name(SAMPLERS, name, "hydra.sweeper.sampler")
    arguments = dict(options)
    if name == "grid":
        arguments["search_space"] = grid
    if seed is not None:
        arguments["seed"] = seed
    try:
        return factory(**arguments)
    except TypeError as error:
        raise ConfigError(f"hydra.sweeper.sampler_options: {error}") from error


def _by_name(table: dict[str, Any], name: str, key: str) -> Any:
    if name not in table:
        raise ConfigError(f"{key}={name}: unknown; choose one of {', '.join(table)}")
    return table[name]
