"""`logger=mlflow`: each job is also a run in an MLflow tracking server.

A job's MLflow run gets the composed config's keys as params (flattened: `model.filters`), every epoch's
metrics with the epoch as step, the final metrics, tags naming the sweep folder, the job, the trial and
the baseline, and model.keras, metrics.json and history.csv as artifacts; its status follows the run's
(completed or pruned: FINISHED, failed: FAILED, interrupted: KILLED). The experiment is one per sweep
folder unless `logger.experiment` names one.

Everything is sent by a background thread from a queue, so training never waits for the tracker. A
tracker that cannot be reached or refuses a call is one warning line: the thread stops sending, and the
run completes with its local records, which are always complete. When the run ends the thread gets
FLUSH_SECONDS to send what is queued. MLflow is an optional extra, imported only in that thread.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from cnnsweep.credentials import location
from cnnsweep.errors import ConfigError, first_line
from cnnsweep.run.config import LoggerConfig, LoggerName
from cnnsweep.run.records import HISTORY_FILE, METRICS_FILE, MODEL_FILE

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0  # what a finished run waits at most for its queued logging (a loaded server: seconds)
SINGLE_RUN_EXPERIMENT = "cnnsweep"
# MLflow retries a failed request 7 times with growing pauses by default; a job's logging gives up sooner
# (the user's own settings of these variables win).
MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
END_STATES = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class RunTracker(Protocol):
    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch's history row."""

    def finish(self, status: str, metrics: dict[str, Any], run_dir: Path) -> None:
        """The run ended with this status and these metrics; its files are in run_dir."""


class NoTracker:
    """logger=csv and logger=tensorboard: the run folder's records are all there is."""

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, status: str, metrics: dict[str, Any], run_dir: Path) -> None:
        pass


def check_logger(config: LoggerConfig) -> None:
    """logger=mlflow with MLflow installed and a tracking URI to send to; else one line naming the fix."""
    if config.name is not LoggerName.mlflow:
        return
    try:
        installed = importlib.util.find_spec("mlflow") is not None
    except ValueError:  # a module entry without a spec (hidden on purpose)
        installed = False
    if not installed:
        raise ConfigError("logger=mlflow needs MLflow, an optional extra: uv sync --extra mlflow "
                          "(pip install 'cnnsweep[mlflow]'), or choose logger=csv")
    if not (config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError("logger=mlflow: no tracking server; set logger.tracking_uri=http://HOST:5000 or "
                          "MLFLOW_TRACKING_URI")


def open_tracker(config: LoggerConfig, params: dict[str, Any], tags: dict[str, str], sweep_dir: Optional[Path],
                 run_name: str) -> RunTracker:
    """The run's tracker: MLflow's for logger=mlflow, else none."""
    if config.name is not LoggerName.mlflow:
        return NoTracker()
    uri = config.tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
    experiment = config.experiment or (str(sweep_dir.resolve()) if sweep_dir is not None else SINGLE_RUN_EXPERIMENT)
    return MlflowTracker(uri, experiment, run_name, params, tags)


class MlflowTracker:
    """One MLflow run, fed by a background thread."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.uri = uri
        self.failure: Optional[str] = None
        self._queue: queue.Queue[Optional[Callable[[Any, str], None]]] = queue.Queue()
        self._thread = threading.Thread(target=self._send, args=(experiment, run_name, params, tags), daemon=True,
                                        name="mlflow-logging")
        self._thread.start()

    def epoch(self, row: dict[str, Any]) -> None:
        step, stamp = int(row["epoch"]), int(time.time() * 1000)
        values = {key: float(value) for key, value in row.items() if key != "epoch" and _number(value)}
        self._queue.put(lambda client, run_id: client.log_batch(run_id, metrics=_metrics(values, stamp, step)))

    def finish(self, status: str, metrics: dict[str, Any], run_dir: Path) -> None:
        values = {f"final_{key}": float(value) for key, value in metrics.items() if _number(value)}
        stamp = int(time.time() * 1000)

        def final(client: Any, run_id: str) -> None:
            client.log_batch(run_id, metrics=_metrics(values, stamp, 0))
            client.set_tag(run_id, "cnnsweep.status", status)
            for name in (MODEL_FILE, METRICS_FILE, HISTORY_FILE):
                if (run_dir / name).is_file():
                    client.log_artifact(run_id, str(run_dir / name))
            client.set_terminated(run_id, END_STATES.get(status, "FAILED"))

        self._queue.put(final)
        self._queue.put(None)
        self._thread.join(FLUSH_SECONDS)
        if self._thread.is_alive() and self.failure is None:
            log.warning("mlflow: %s did not take this run's last records within %.0f s; they may be missing there "
                        "(the run folder has them all)", location(self.uri), FLUSH_SECONDS)

    def _send(self, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        try:
            for key, value in MLFLOW_DEFAULTS.items():
                os.environ.setdefault(key, value)
            from mlflow.entities import Param, RunTag
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.uri)
            run_id = client.create_run(_experiment_id(client, experiment), tags=tags, run_name=run_name).info.run_id
            items = [Param(key, str(value)[:6000]) for key, value in params.items()]
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
                client.log_batch(run_id, params=items[start:start + 100])
            client.log_batch(run_id, tags=[RunTag("cnnsweep.params", str(len(items)))])
            while (action := self._queue.get()) is not None:
                action(client, run_id)
        except Exception as error:  # any failure of the tracker (unreachable, refused, a bad value): warn once
            self.failure = first_line(error)
            log.warning("mlflow: %s unreachable or refused this run's logging (%s); the run goes on, its folder "
                        "holds every record", location(self.uri), self.failure)


def log_sweep_leaderboard(config: LoggerConfig, sweep_dir: Path, leaderboard: Path) -> None:
    """logger=mlflow: the sweep's leaderboard.csv as the artifact of a run named `leaderboard` in the sweep's
    experiment (its jobs' runs are beside it). A tracker that cannot take it is a warning."""
    if config.name is not LoggerName.mlflow or not leaderboard.is_file():
        return
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        for key, value in MLFLOW_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = _experiment_id(client, config.experiment or str(sweep_dir.resolve()))
        run_id = client.create_run(experiment, tags={"cnnsweep.sweep": str(sweep_dir)}, run_name="leaderboard").info.run_id
        client.log_artifact(run_id, str(leaderboard))
        client.set_terminated(run_id, "FINISHED")
    except Exception as error:  # the tracker's failure never fails the sweep
        log.warning("mlflow: %s did not take the sweep's leaderboard (%s); it is in %s", location(uri),
                    first_line(error), leaderboard)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id, creating it if needed (two jobs may create it at once: the loser reads it)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return str(existing.experiment_id)


def _metrics(values: dict[str, float], stamp: int, step: int) -> list[Any]:
    from mlflow.entities import Metric

    return [Metric(key, value, stamp, step) for key, value in values.items()]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`model.filters`), as MLflow params and Hydra overrides name them."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat
