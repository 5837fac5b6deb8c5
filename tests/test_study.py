"""Study bookkeeping without TensorFlow, on real SQLite studies and real run folders: a trial's state from
its metrics.json, counting towards the study's total, settling trials a dead sweep process left RUNNING,
the study's objectives from the sweeper settings and the run config, and one-line setting errors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cnnsweep.credentials import redact, redact_override, url_password, with_password
from cnnsweep.errors import ConfigError
from cnnsweep.search.settings import SAMPLER_CONFIGS, OptunaSearchConf
from cnnsweep.launch.interrupts import Interrupt
from cnnsweep.run.records import RunRecord, environment_info
from cnnsweep.search.preflight import study_spec
from cnnsweep.search.study import (
    REQUEUED_ATTR, RUN_DIR_ATTR, WORKER_ATTR, StudySpec, count_trials, make_sampler, returned_outcome, settle_orphans,
    trial_outcome,
)


def run_folder(path: Path, status: str, **fields) -> Path:
    record = RunRecord(path, seed=0)
    if status == "running":
        record.update(**fields)
    elif status == "failed":
        record.fail(fields.pop("error", "boom"), **fields)
    else:
        record.finish(status, **fields)
    return path


@pytest.mark.parametrize(("status", "fields", "state", "values", "error"), [
    ("completed", {"val_accuracy": 0.9, "params": 10}, TrialState.COMPLETE, [0.9, 10.0], None),
    ("pruned", {"val_accuracy": 0.5}, TrialState.PRUNED, None, None),
    ("failed", {"error": "loss became NaN at epoch 1"}, TrialState.FAIL, None, "loss became NaN at epoch 1"),
    ("running", {}, TrialState.FAIL, None, "run ended with status 'running'"),
    ("completed", {"val_accuracy": float("nan"), "params": 10}, TrialState.FAIL, None,
     "objective {'val_accuracy': None, 'params': 10} is missing or not finite"),
    ("completed", {"params": 10}, TrialState.FAIL, None,
     "objective {'val_accuracy': None, 'params': 10} is missing or not finite"),
])
def test_a_trial_state_comes_from_its_run_folder(tmp_path, status, fields, state, values, error) -> None:
    folder = run_folder(tmp_path / "run", status, **fields)
    assert trial_outcome(folder, ["val_accuracy", "params"]) == (state, values, error)


def test_a_missing_or_corrupt_record_is_a_failed_trial(tmp_path: Path) -> None:
    state, _, error = trial_outcome(tmp_path / "never-started", ["val_accuracy"])
    assert state is TrialState.FAIL and error.startswith(f"no readable metrics.json in {tmp_path / 'never-started'}")
    (tmp_path / "metrics.json").write_text('{"status": "compl')
    assert trial_outcome(tmp_path, ["val_accuracy"])[0] is TrialState.FAIL


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_trials_of_a_dead_sweep_process_are_settled_from_their_folders(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    dead = f"{socket.gethostname()}:{dead_pid()}"
    alive = f"{socket.gethostname()}:{subprocess.os.getpid()}"
    elsewhere = f"another-host:{dead_pid()}"
    folders = {
        "finished": run_folder(tmp_path / "0", "completed", val_accuracy=0.8),
        "interrupted": run_folder(tmp_path / "1", "running"),
        "running here": run_folder(tmp_path / "2", "running"),
        "other host": run_folder(tmp_path / "3", "running"),
    }
    owners = {"finished": dead, "interrupted": dead, "running here": alive, "other host": elsewhere}
    for name, folder in folders.items():
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr(WORKER_ATTR, owners[name])
        trial.set_user_attr(RUN_DIR_ATTR, str(folder))

    settle_orphans(study, ["val_accuracy"])
    trials = study.get_trials()
    assert [trial.state for trial in trials[:4]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING,
                                                    TrialState.RUNNING]
    assert trials[0].value == 0.8
    [requeued] = trials[4:]  # the interrupted trial, queued again with its parameters
    assert requeued.state == TrialState.WAITING and requeued.user_attrs[REQUEUED_ATTR] == 1
    rerun = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert rerun.number == requeued.number and rerun.params == trials[1].params
    # The interrupted trial does not count twice towards the study's total: its rerun does.
    assert count_trials(study, (TrialState.FAIL,)) == 0
    assert count_trials(study, (TrialState.COMPLETE, TrialState.RUNNING)) == 4


def job_config(val_size: int = 100, metric=None, direction=None):
    return OmegaConf.create({"dataset": {"val_size": val_size}, "objective": {"metric": metric, "direction": direction}})


@pytest.mark.parametrize(("settings", "config", "metrics", "directions"), [
    ({}, job_config(), ["val_accuracy"], ["maximize"]),  # the run's own objective
    ({}, job_config(metric="val_loss"), ["val_loss"], ["minimize"]),
    ({}, job_config(metric="val_loss", direction="maximize"), ["val_loss"], ["maximize"]),
    ({"metric": "val_loss"}, job_config(metric="val_accuracy"), ["val_loss"], ["minimize"]),
    ({"metric": ["val_accuracy", "params"], "direction": ["maximize", "minimize"]}, job_config(),
     ["val_accuracy", "params"], ["maximize", "minimize"]),
    ({"metric": ["val_accuracy", "train_seconds"]}, job_config(), ["val_accuracy", "train_seconds"],
     ["maximize", "minimize"]),
    ({}, OmegaConf.create({"x": 1}), [], ["minimize"]),  # any Hydra app: its return value, minimised
    ({"direction": ["minimize", "maximize"]}, OmegaConf.create({"x": 1}), [], ["minimize", "maximize"]),
])
def test_the_study_objective(settings: dict, config, metrics: list, directions: list) -> None:
    spec = study_spec(OptunaSearchConf(**settings), config)
    assert (spec.metrics, spec.directions) == (metrics, directions)


@pytest.mark.parametrize(("settings", "config", "message"), [
    ({}, job_config(val_size=0),
     "objective.metric=test_accuracy: searches never optimise the test set; set dataset.val_size=N"),
    ({"metric": "val_accuracy"}, job_config(val_size=0),
     "hydra.sweeper.metric=val_accuracy needs a validation hold-out; set dataset.val_size=N"),
    ({"metric": "test_loss"}, job_config(), "hydra.sweeper.metric=test_loss: searches never optimise the test set"),
    ({"metric": "f1"}, job_config(), "hydra.sweeper.metric=f1: not a metric this run reports; choose one of"),
    ({"metric": ["val_accuracy", "params"], "direction": "maximize"}, job_config(),
     "hydra.sweeper: 2 metric(s) ['val_accuracy', 'params'] but 1 direction(s) ['maximize']"),
    ({"direction": "up"}, job_config(), "hydra.sweeper.direction=up: must be maximize or minimize"),
])
def test_impossible_objectives_are_refused_before_any_trial(settings: dict, config, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        study_spec(OptunaSearchConf(**settings), config)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: make_sampler("annealing", {}, None), "hydra.sweeper.sampler=annealing: unknown; choose one of tpe, "),
    (lambda: make_sampler("tpe", {"population_size": 8}, None), "hydra.sweeper.sampler_options: "),
    (lambda: make_sampler({"_target_": "optuna.samplers.TPESampler", "n_candidates": 8}, {}, None),
     "hydra.sweeper.sampler: TPESampler got an unexpected keyword argument 'n_candidates'"),
    (lambda: make_sampler({"_target_": "optuna.samplers.Annealer"}, {}, None),
     "hydra.sweeper.sampler._target_=optuna.samplers.Annealer: cannot import it"),
    (lambda: make_sampler({"_target_": "optuna.pruners.MedianPruner"}, {}, None),
     "hydra.sweeper.sampler._target_=optuna.pruners.MedianPruner: not an Optuna sampler class"),
    (lambda: make_sampler({"_target_": "optuna.samplers.RandomSampler", "seed": 1}, {}, 2),
     "hydra.sweeper.seed=2 and hydra.sweeper.sampler.seed=1 disagree"),
    (lambda: StudySpec("sqlite:///x.db", "s", ["maximize"], ["val_accuracy"], "bayes").make_pruner(),
     "hydra.sweeper.pruner=bayes: unknown; choose one of median, "),
    (lambda: StudySpec("sqlite:///x.db", "s", ["maximize"], ["val_accuracy"], "median",
                       {"warmup": 2}).make_pruner(), "hydra.sweeper.pruner_options for pruner=median: "),
])
def test_bad_sampler_and_pruner_settings_are_one_line(call, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        call()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # QMCSampler's, Optuna's own
@pytest.mark.parametrize("name", SAMPLER_CONFIGS)
def test_each_sampler_config_builds_its_sampler_without_deprecation_warnings(name: str) -> None:
    node = OmegaConf.to_container(OmegaConf.structured(SAMPLER_CONFIGS[name]))
    if name == "motpe":  # removed from Optuna 4: one line that names the replacement
        with pytest.raises(ConfigError, match="hydra/sweeper/sampler=motpe: optuna .* has no MOTPESampler"):
            make_sampler(node, {}, 7)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        sampler = make_sampler({**node, "seed": 7}, {}, None, {"x": [1, 2]})
    assert type(sampler).__name__ == node["_target_"].rpartition(".")[2]


def test_fields_of_another_sampler_are_dropped_with_a_warning(caplog) -> None:
    """A sweeps file's TPE fields, with hydra/sweeper/sampler=random chosen on the command line."""
    tpe = OmegaConf.to_container(OmegaConf.structured(SAMPLER_CONFIGS["tpe"]))
    sampler = make_sampler({**tpe, "_target_": "optuna.samplers.RandomSampler", "multivariate": True}, {}, 1)
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    assert "hydra.sweeper.sampler.multivariate=True does not apply to RandomSampler; ignored" in caplog.text


@pytest.mark.parametrize(("value", "objectives", "outcome"), [
    (2.5, 1, (TrialState.COMPLETE, [2.5], None)),
    ((1, 2.0), 2, (TrialState.COMPLETE, [1.0, 2.0], None)),
    ([1.0], 2, (TrialState.FAIL, None, "the task returned 1 value(s) for 2 objective(s)")),
    ("best", 1, (TrialState.FAIL, None, "the task returned 'best', not 1 number(s)")),
    (None, 1, (TrialState.FAIL, None, "the task returned None, not 1 number(s)")),
    (float("nan"), 1, (TrialState.FAIL, None, "the task returned nan, which is not finite")),
])
def test_a_returned_objective(value, objectives: int, outcome) -> None:
    assert returned_outcome(value, objectives) == outcome


def test_storage_labels_never_show_a_password(tmp_path: Path) -> None:
    spec = StudySpec("postgresql+psycopg://user:secret@db.example:5432/studies", "s", ["maximize"], ["val_accuracy"])
    assert spec.storage_label == "postgresql+psycopg://db.example:5432/studies"
    journal = {"_target_": "optuna.storages.JournalStorage", "log_storage": {}}
    assert StudySpec(journal, "s", ["maximize"], ["val_accuracy"]).storage_label == "optuna.storages.JournalStorage"
    written = StudySpec.read(StudySpec(f"sqlite:///{tmp_path}/a.db", "s", ["maximize"], ["val_accuracy"]).write(tmp_path))
    assert json.loads((tmp_path / "study.json").read_text())["study_name"] == written.study_name == "s"


@pytest.mark.parametrize(("url", "redacted", "password"), [
    ("postgresql+psycopg://user:s3cr%40t@127.0.0.1:5432/db", "postgresql+psycopg://user@127.0.0.1:5432/db", "s3cr@t"),
    ("postgresql://u:p@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require", "p"),
    ("postgresql+psycopg://user@host/db", "postgresql+psycopg://user@host/db", None),
    # any character in a password: `/`, `:`, an escaped `@` and `%`, or one in the query string
    ("postgresql+psycopg://u:a/b:c%40d%25e@h:5432/db", "postgresql+psycopg://u@h:5432/db", "a/b:c@d%e"),
    ("postgresql+psycopg://u@h/db?password=x%2Fy&sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require",
     "x/y"),
    ("sqlite:///outputs/optuna.db", "sqlite:///outputs/optuna.db", None),
])
def test_storage_passwords_are_kept_out_and_put_back(url: str, redacted: str, password, monkeypatch) -> None:
    assert (redact(url), url_password(url)) == (redacted, password)
    if password:
        assert url_password(with_password(redacted, password)) == password
        assert redact(with_password(redacted, password)) == redacted
        assert redact_override(f"hydra.sweeper.storage={url}") == f"hydra.sweeper.storage={redacted}"


def test_the_interrupt_line_and_environment_json_leave_the_password_out(monkeypatch, tmp_path: Path) -> None:
    """An interrupted search started with the password in its storage URL prints a continue command without
    it (and says where the password comes from instead); a run's environment.json records the command line
    without it."""
    url = "postgresql+psycopg://user:p/a%40s:s@db.example:5432/studies"
    monkeypatch.setattr(sys, "argv", ["src/run.py", "-m", "sweeps=quick", f"hydra.sweeper.storage={url}"])
    interrupt = Interrupt()
    interrupt.signum, interrupt.tally = signal.SIGINT, (1, 4, "trials")
    line = str(interrupt.error(tmp_path / "sweep"))
    assert "p/a@s:s" not in line and "p/a%40s:s" not in line
    assert "the storage password is left out of this line: give it through PGPASSWORD or ~/.pgpass" in line
    command = shlex.split(line.split("continue with: ")[1])
    assert command[-2:] == ["hydra.sweeper.storage=postgresql+psycopg://user@db.example:5432/studies",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    recorded = environment_info({}, tmp_path)["command"]
    assert recorded == ["src/run.py", "-m", "sweeps=quick",
                        "hydra.sweeper.storage=postgresql+psycopg://user@db.example:5432/studies"]


def test_study_json_has_no_password_and_trials_still_open_the_study(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNSWEEP_STORAGE_PASSWORD", "")  # so the variable the write sets is removed afterwards
    spec = StudySpec("postgresql+psycopg://user:hunter2@127.0.0.1:9/db", "s", ["maximize"], ["val_accuracy"])
    path = spec.write(tmp_path)
    assert "hunter2" not in path.read_text() and os.environ["CNNSWEEP_STORAGE_PASSWORD"] == "hunter2"
    read = StudySpec.read(path)
    assert read.storage == "postgresql+psycopg://user@127.0.0.1:9/db"
    assert with_password(read.storage, os.environ["CNNSWEEP_STORAGE_PASSWORD"]) == spec.storage


def test_a_warm_start_takes_the_best_earlier_trials_that_fit_the_new_space() -> None:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from cnnsweep.search.warm_start import best_fitting

    old = {"a": IntDistribution(0, 10), "b": CategoricalDistribution(["x", "y", "z"])}
    earlier = optuna.create_study(direction="maximize")
    for params, value in [({"a": 1, "b": "x"}, 0.5), ({"a": 5, "b": "y"}, 0.9), ({"a": 2, "b": "z"}, 0.8),
                          ({"a": 2, "b": "z"}, 0.7), ({"a": 3, "b": "x"}, 0.6), ({"a": 4, "b": "y"}, 0.95)]:
        earlier.add_trial(optuna.trial.create_trial(params=params, distributions=old, value=value))
    new = {"a": IntDistribution(0, 4), "b": CategoricalDistribution(["x", "z"]), "c": IntDistribution(1, 2)}
    # trial 5 (b=y) and trial 1 (a=5) do not fit; trial 3 repeats trial 2; c is left to the sampler
    assert best_fitting(earlier, new, 3) == [(2, {"a": 2, "b": "z"}), (4, {"a": 3, "b": "x"}), (0, {"a": 1, "b": "x"})]
    minimising = optuna.create_study(direction="minimize")
    minimising.add_trials(earlier.trials)
    assert best_fitting(minimising, new, 1) == [(0, {"a": 1, "b": "x"})]
