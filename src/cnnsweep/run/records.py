"""The run record: metrics.json, history.csv and environment.json in a run folder.

Every file is replaced atomically (write a temporary file beside it, then rename), so a reader such as
the leaderboard, or a run killed mid-write, never sees half a file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

from cnnsweep.credentials import redact_override
from cnnsweep.errors import DiskFull

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
ENVIRONMENT_FILE = "environment.json"
MODEL_FILE = "model.keras"
NATIVE_LOG_FILE = "tensorflow.log"  # what TensorFlow's native code printed while it started
NATIVE_LOG_ENV = "CNNSWEEP_TF_LOGS"  # 1: those lines on the console instead, as TensorFlow prints them
# A run's status in metrics.json: `running` until it ends `completed`, `pruned` (a search stopped it
# early), `interrupted` (Ctrl-C or its sweep's signal) or `failed`; a reader may also find it unreadable.
RUNNING, COMPLETED, PRUNED, INTERRUPTED, FAILED = "running", "completed", "pruned", "interrupted", "failed"
UNREADABLE = "unreadable"  # no metrics.json, or not JSON: never written by a run, only reported by readers

# Versions worth a top-level field; every installed distribution is listed under "packages" too.
KEY_PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "hydra-core", "omegaconf", "optuna",
                "hydra-optuna-sweeper", "numpy", "pandas")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _file_mode() -> int:
    """The mode a plain open() would give, since temporary files are created private (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def write_atomic(path: Path, text: str, durable: bool = False) -> None:
    """Replace `path` with `text` in one rename, so readers (and a killed process) see the old file or
    the new one. `durable` also flushes it to disk first, to survive a machine crash: kept for a run's
    final record, since an fsync can stall for many seconds on a busy disk (seen here mid-training)."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(handle.name, FILE_MODE)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model under a temporary name, then rename: a crash never leaves a half-written
    model.keras, and a full disk leaves no partial file behind (DiskFull says so)."""
    partial = path.with_name(f".partial.{path.name}")
    try:
        model.save(partial)
        os.replace(partial, path)
    except Exception as error:
        partial.unlink(missing_ok=True)
        full = disk_full_errno(error)
        if full is not None:
            raise DiskFull(f"no space left on the disk for {path} ({errno.errorcode[full]}); free space there "
                           "or write runs elsewhere (hydra.run.dir, hydra.sweep.dir)") from error
        raise


def disk_full_errno(error: BaseException) -> Optional[int]:
    """ENOSPC or EDQUOT somewhere in the exception's chain (Keras may wrap the OSError)."""
    seen: Optional[BaseException] = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv's rows as written by write_history (numbers as floats, epoch as int)."""
    with open(path, newline="") as handle:
        rows = [{key: float(value) if value != "" else math.nan for key, value in row.items()}
                for row in csv.DictReader(handle)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def write_json(path: Path, data: dict[str, Any], durable: bool = False) -> None:
    """Strict JSON: a NaN or infinite metric is written as null, which every JSON reader accepts."""
    write_atomic(path, json.dumps(_finite(data), indent=2, allow_nan=False) + "\n", durable)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per epoch; columns in first-seen order so `epoch` leads and Keras metrics follow."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


@dataclass(frozen=True)
class Objective:
    name: str  # the metrics.json field optimised
    value: float
    direction: str  # maximize | minimize


@dataclass(frozen=True)
class SavedRun:
    """A run folder's metrics.json as read back (RunRecord.read): the one reading of it that sweeps,
    searches, reruns and the leaderboard share."""

    run_dir: Path
    fields: dict[str, Any]  # every field as written; empty when UNREADABLE
    status: str  # one of the statuses above, or UNREADABLE
    error: Optional[str]  # why the run failed, or why metrics.json could not be read

    @property
    def objective(self) -> Optional[Objective]:
        """The objective the run recorded (a completed run's, or a pruned run's last value); None when it
        recorded none, or a malformed one."""
        objective = self.fields.get("objective")
        if not isinstance(objective, dict):
            return None
        try:
            return Objective(str(objective["name"]), float(objective["value"]), str(objective["direction"]))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def completed_objective(self) -> Optional[Objective]:
        return self.objective if self.status == COMPLETED else None

    @property
    def epochs_completed(self) -> int:
        return int(self.fields.get("epochs_completed") or 0)

    def value(self, metric: str) -> Optional[float]:
        """A metric's finite value, else None."""
        value = self.fields.get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)


class RunRecord:
    """metrics.json over a run's life: `running` at start, then `completed`, `pruned`, `interrupted` or
    `failed`. `RunRecord.read` reads any run folder's."""

    def __init__(self, run_dir: Path, seed: Optional[int]) -> None:
        self.run_dir = run_dir
        self.path = run_dir / METRICS_FILE
        self.metrics: dict[str, Any] = {
            "status": RUNNING,
            "error": None,
            "objective": None,
            "test_accuracy": None,
            "test_loss": None,
            "val_accuracy": None,
            "val_loss": None,
            "params": None,
            "epochs_completed": 0,
            "train_seconds": None,
            "seconds_per_epoch": None,
            "seed": seed,
            "dataset": None,
            "started_at": utc_now(),
            "finished_at": None,
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        self._save({}, durable=False)

    @staticmethod
    def read(run_dir: Path) -> SavedRun:
        """The run's record, UNREADABLE (with the reason as its error) when there is no readable one."""
        path = run_dir / METRICS_FILE
        try:
            fields = json.loads(path.read_text())
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            return SavedRun(run_dir, {}, UNREADABLE, f"no readable {METRICS_FILE} in {run_dir} ({error})")
        return SavedRun(run_dir, fields, str(fields.get("status") or UNREADABLE), fields.get("error"))

    def update(self, **fields: Any) -> None:
        self._save(fields, durable=False)

    def finish(self, status: str, **fields: Any) -> None:
        """`completed`, or `pruned` when a search stopped the run early."""
        self._save(dict(status=status, finished_at=utc_now(), **fields), durable=True)

    def fail(self, error: str, **fields: Any) -> None:
        self._save(dict(status=FAILED, error=error, finished_at=utc_now(), **fields), durable=True)

    def _save(self, fields: dict[str, Any], durable: bool) -> None:
        """Progress updates skip the fsync; the final record (finish, fail) is flushed to disk."""
        self.metrics.update(fields)
        write_json(self.path, self.metrics, durable)


@contextlib.contextmanager
def native_log(path: Path) -> Iterator[None]:
    """Send what native code writes to stderr (file descriptor 2) to `path` for the duration, so
    TensorFlow's start-up lines (absl, oneDNN, CUDA probing) stay off the console; an empty file is
    removed. Python's own errors raised meanwhile still reach the console: they are printed after."""
    if os.environ.get(NATIVE_LOG_ENV) == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    if path.stat().st_size == 0:
        path.unlink()


def mark_failed(run_dir: Path, error: str, status: str = FAILED) -> None:
    """Turn a `running` metrics.json left by a process that died, or a missing one, into `failed` (or the
    status given: a cluster job the sweep cancelled is `interrupted`), keeping its other fields. Called by
    the sweep for its jobs: a folder it cannot write (a file in its place, a full disk) is a warning, and
    the sweep goes on with the job's outcome."""
    saved = RunRecord.read(run_dir)
    try:
        if saved.status == UNREADABLE:
            run_dir.mkdir(parents=True, exist_ok=True)
            saved = SavedRun(run_dir, {"status": RUNNING, "started_at": None}, RUNNING, None)
        if saved.status == RUNNING:
            write_json(run_dir / METRICS_FILE, {**saved.fields, "status": status, "error": error,
                                                "finished_at": utc_now()}, durable=True)
    except (OSError, DiskFull) as failure:
        log.warning("%s: the job's outcome (%s) is not recorded there: %s", run_dir, error, failure)


def cpu_description() -> str:
    """The CPU's model, its cores, whether it has AVX-512, and the instruction-set cap on oneDNN (TensorFlow's
    CPU kernels) when ONEDNN_MAX_CPU_ISA sets one: the same configuration trains at another speed, and to
    other (each deterministic) numbers, on each."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    avx512 = re.search(r"^flags\s*:.*\bavx512f\b", info, re.MULTILINE) is not None
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (f"{model.group(1) if model else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores, "
            f"AVX-512 {'yes' if avx512 else 'no'}" + (f", oneDNN capped at {cap}" if cap else ""))


def environment_info(devices: dict[str, Any], project_dir: Path) -> dict[str, Any]:
    """What is needed to tell whether two runs are comparable: versions, code state, devices, CPU, host."""
    packages = installed_packages()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "host": socket.gethostname(),
        "pid": os.getpid(),  # the process that trained it (a warm worker runs several jobs)
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # set when a Slurm job trained it
        "versions": {name: packages.get(name) for name in KEY_PACKAGES},
        "git": git_state(project_dir),
        "devices": devices,
        "command": [redact_override(argument) for argument in sys.argv],  # without a storage password
        "cwd": os.getcwd(),
        "packages": dict(sorted(packages.items())),
    }


def recorded_backend(run_dir: Path) -> Optional[str]:
    """The Keras backend a run trained on, from its environment.json; None where it recorded none. Its saved
    config may say only `${oc.env:KERAS_BACKEND,tensorflow}`, which another shell resolves differently."""
    return _recorded_environment(run_dir, "devices", "backend")


def recorded_cpu(run_dir: Path) -> Optional[str]:
    """The CPU a run trained on (cpu_description's line), from its environment.json; None where it recorded
    none (runs before the field, or no readable file)."""
    return _recorded_environment(run_dir, "cpu")


def _recorded_environment(run_dir: Path, *keys: str) -> Optional[str]:
    """The text at `keys` in a run's environment.json; None where the file, a key or the text is missing."""
    try:
        value = json.loads((run_dir / ENVIRONMENT_FILE).read_text())
        for key in keys:
            value = value[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


@functools.cache
def installed_packages() -> dict[str, str]:
    """Every installed distribution's version by its lower-cased name, as the import system finds them (the
    first on sys.path wins). Once per process (a warm worker runs many jobs), and from the metadata files'
    headers only: `Distribution.metadata` parses each whole file, long descriptions included, twice."""
    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        headers = dict(line.split(": ", 1) for line in text.split("\n\n", 1)[0].splitlines()
                       if line.startswith(("Name: ", "Version: ")))
        if "Name" in headers and "Version" in headers:
            packages.setdefault(headers["Name"].strip().lower(), headers["Version"].strip())
    return packages


def git_state(directory: Path) -> dict[str, Any]:
    """The commit and whether the tree had uncommitted changes; nulls outside a git checkout."""

    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}
