"""The Hydra task: one composed config in, one run folder and one objective value out.

Inside a multirun a failed or interrupted job is recorded and returns NaN instead of raising, so one
bad configuration never ends an unattended sweep; a single run raises, and the entry point prints it.

What trains is a Trainer: KerasTrainer here; the fast test tier runs the same task with a
TensorFlow-free one (tests/fake_run.py), so everything around training is tested in seconds.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnsweep.errors import CnnsweepError, DiskFull, OutOfMemory, RunFailed
from cnnsweep.project import PROJECT_ROOT
from cnnsweep.run import hardware
from cnnsweep.run.checkpoints import skips_checkpoints
from cnnsweep.run.config import Progress, RunConfig, load_run_config
from cnnsweep.run.data import Dataset, load_dataset
from cnnsweep.run.model import check_fits_image
from cnnsweep.run.records import (
    ENVIRONMENT_FILE,
    FAILED,
    INTERRUPTED,
    NATIVE_LOG_FILE,
    RunRecord,
    environment_info,
    native_log,
    write_json,
)
from cnnsweep.run.timings import Stopwatch, merged
from cnnsweep.run.tracking import RunTracker, check_logger, flat_params, open_tracker
from cnnsweep.run.trainer import (
    EpochCallback,
    EpochReporter,
    ReporterFactory,
    TestDecision,
    Trainer,
    TrainingResult,
    always_test,
)

log = logging.getLogger(__name__)


class KerasTrainer:
    """The backend set up by cnnsweep.run.hardware, the model trained by cnnsweep.run.training."""

    def prepare(self, config: RunConfig) -> dict[str, Any]:
        return hardware.configure(config.hardware, config.seed)

    def train(self, config: RunConfig, data: Dataset, run_dir: Path, show_progress_bar: bool,
              on_epoch: EpochCallback, restart_if_unresumable: bool, skip_test: TestDecision,
              write_checkpoints: bool) -> TrainingResult:
        from cnnsweep.run.training import train  # imports Keras, so only after prepare()

        hardware.freeze_imported_objects()
        return train(config, data, run_dir, show_progress_bar, on_epoch, restart_if_unresumable, skip_test,
                     write_checkpoints=write_checkpoints)


def no_reporter() -> Optional[EpochReporter]:
    return None


def run_task(cfg: DictConfig, trainer: Trainer, reporter: ReporterFactory = no_reporter) -> float:
    """The task around any Trainer: config checks, data, run record, epoch reports (a search's pruning,
    from `reporter`), failures."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    in_multirun = hydra_config.mode == RunMode.MULTIRUN
    record = RunRecord(run_dir, seed=cfg.get("seed"))
    prefix = f"job {hydra_config.job.get('num')} " if in_multirun else ""
    try:
        with native_log(run_dir / NATIVE_LOG_FILE):  # TensorFlow's own lines: to a file, not the console
            return _run(cfg, trainer, reporter, run_dir, record, in_multirun, prefix)
    except KeyboardInterrupt:  # Ctrl-C; in a multirun, the sweep passing on its SIGINT or SIGTERM
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C and the sweep's both arrive
        record.finish(INTERRUPTED, error="interrupted (Ctrl-C or a signal to its sweep); run the same command "
                                         "again (a sweep prints the command that continues it) to train it again")
        if not in_multirun:
            raise
        log.warning("%sinterrupted after epoch %s", prefix, record.metrics.get("epochs_completed", 0))
        return math.nan
    except Exception as raised:
        error = hardware.out_of_memory(raised) or raised
        expected = isinstance(error, CnnsweepError)
        message = str(error) if expected else f"{type(error).__name__}: {error}"
        record.fail(message, **(error.measured if isinstance(error, DiskFull) else {}),
                    **({"out_of_memory": True} if isinstance(error, OutOfMemory) else {}))
        if not in_multirun:
            raise RunFailed(error) from raised
        log.error("%srun failed: %s", prefix, message, exc_info=not expected)
        return math.nan


def _run(cfg: DictConfig, trainer: Trainer, reporter: ReporterFactory, run_dir: Path, record: RunRecord, in_multirun: bool,
         prefix: str) -> float:
    config = load_run_config(cfg)
    check_logger(config.logger)
    hardware.select_backend(config)  # before anything imports Keras (the data's download does)
    stopwatch = Stopwatch()
    with stopwatch.measure("data"):
        data = load_dataset(config.dataset, config.seed)
    check_fits_image(config.model, data.input_shape)
    record.update(dataset=data.summary())
    with stopwatch.measure("setup"):
        devices = trainer.prepare(config)
        write_json(run_dir / ENVIRONMENT_FILE, environment_info(devices, PROJECT_ROOT))
    record.update(timings=stopwatch.as_dict())

    progress = config.training.progress
    if progress is Progress.auto:
        progress = Progress.epoch if in_multirun else Progress.bar

    trial = reporter()  # an Optuna search's trial, when a search launched this run
    if trial is not None:
        record.update(trial=trial.number, baseline=trial.baseline,
                      **({"warm_start": trial.warm_start} if trial.warm_start else {}))

    tracker = _tracker(cfg, config, run_dir, in_multirun, trial)
    no_checkpoints = skips_checkpoints(config.training.checkpoints, trial.requeued if trial is not None else None)
    if no_checkpoints is not None:
        record.update(checkpoints_skipped=no_checkpoints)

    def on_epoch(row: dict[str, Any]) -> bool:
        record.update(epochs_completed=row["epoch"])
        tracker.epoch(row)
        if progress is Progress.epoch:
            log.info("%s%s", prefix, _epoch_line(row, config.training.epochs))
        return trial is not None and trial.should_stop(row)

    try:
        # A sweep's job that cannot resume starts again (its sweep wants the result); a single run refuses.
        result = trainer.train(config, data, run_dir, progress is Progress.bar, on_epoch,
                               restart_if_unresumable=in_multirun,
                               skip_test=trial.skips_test if trial is not None else always_test,
                               write_checkpoints=no_checkpoints is None)
    except BaseException as error:
        tracker.finish(INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED, record.metrics, run_dir)
        raise
    metrics = {**result.metrics, "timings": merged(stopwatch.as_dict(), result.metrics.get("timings"))}
    metric, direction = config.objective_metric, config.objective_direction
    value = float(metrics[metric])
    status = "pruned" if result.stopped_early else "completed"
    record.finish(status, objective={"name": metric, "value": value, "direction": direction}, **metrics)
    tracker.finish(status, metrics, run_dir)
    if result.stopped_early:
        log.info("%spruned after epoch %d: %s is unpromising next to earlier trials", prefix,
                 metrics["epochs_completed"], trial.metric if trial else metric)
    log.info("%s%s", prefix, _summary_line(config, metrics, run_dir))
    return value


def _tracker(cfg: DictConfig, config: RunConfig, run_dir: Path, in_multirun: bool,
             trial: Optional[EpochReporter]) -> RunTracker:
    """logger=mlflow's run for this job (cnnsweep.run.tracking), tagged with where it belongs."""
    hydra_config = HydraConfig.get()
    sweep_dir = Path(hydra_config.sweep.dir) if in_multirun else None
    tags = {"cnnsweep.run_dir": str(run_dir), "cnnsweep.seed": str(config.seed)}
    if sweep_dir is not None:
        tags.update({"cnnsweep.sweep": str(sweep_dir), "cnnsweep.job": str(hydra_config.job.get("num"))})
    if trial is not None:
        tags.update({"cnnsweep.trial": str(trial.number), "cnnsweep.baseline": str(trial.baseline).lower()})
    params = flat_params(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return open_tracker(config.logger, params, tags, sweep_dir, run_dir.name)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    values = " ".join(f"{key} {value:.4f}" for key, value in row.items() if key not in ("epoch", "seconds"))
    return f"epoch {row['epoch']}/{epochs}: {values} ({row['seconds']:.1f} s)"


def _summary_line(config: RunConfig, metrics: dict[str, Any], run_dir: Path) -> str:
    validation = (
        f" | val_accuracy {metrics['val_accuracy']:.4f}" if metrics["val_accuracy"] is not None else ""
    )
    test = (f"test_accuracy {metrics['test_accuracy']:.4f}" if metrics["test_accuracy"] is not None
            else "test set skipped")
    return (
        f"{test}{validation} | params {metrics['params']:,} | "
        f"{metrics['epochs_completed']} epochs in {metrics['train_seconds']:.1f} s "
        f"({metrics['seconds_per_epoch']:.1f} s/epoch) | {config.objective_metric} is the objective | "
        f"{run_dir}"
    )
