"""Rerun a past run from the config it saved, through the same Hydra entry point (src/run.py).

The saved `.hydra/config.yaml` is the fully composed config, so it becomes the primary config
(`--config-path`): the rerun does not depend on today's conf/ defaults, and on CPU it reproduces
history.csv exactly. The backend it trained on (environment.json) is pinned, since the saved config may
take it from KERAS_BACKEND. Extra overrides (`seed=1`, or `-m seed=0,1,2`) apply on top of it. `--resume`
continues a killed or interrupted run in its own folder after its last finished epoch.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from cnnsweep.errors import ConfigError
from cnnsweep.launch.settings import PROCESS_LAUNCHER, ProcessLauncherConf
from cnnsweep.project import CONF_DIR, RUN_SCRIPT
from cnnsweep.run.checkpoints import Checkpoints
from cnnsweep.run.config import FRESH_START_OVERRIDE, RESUME_OVERRIDE
from cnnsweep.run.records import COMPLETED, RunRecord, cpu_description, recorded_backend, recorded_cpu
from cnnsweep.run.tracking import flat_params

# Where reruns go; the microsecond timestamp matches conf/config.yaml's run folders.
RERUN_DIR = "outputs/reruns/${now:%Y-%m-%d_%H-%M-%S-%f}"
RERUN_SWEEP_DIR = "outputs/multiruns/${now:%Y-%m-%d_%H-%M-%S-%f}"

# Settings added after runs were first saved, each with the value that does what runs saved before it
# existed did (a config group: the conf/ file whose values those are, filled in key by key). A saved
# config that lacks one gets it, so every past run reruns as it ran; tests/saved_configs/ holds the config
# each version of conf/ saved, and test_rerun checks that each still reruns.
SETTINGS_OLDER_RUNS_LACK: dict[str, Any] = {
    "model._target_": "cnnsweep.run.model.tutorial_cnn",  # the only model before model families
    "dataset.test_size": 0,  # the folder dataset's settings: the .npz datasets before it ignore them
    "dataset.image_size": None,
    "dataset.color_mode": None,
    "dataset.in_memory_gb": None,
    "augment": CONF_DIR / "augment" / "none.yaml",
    "hardware.backend": "tensorflow",  # the only backend before hardware.backend
    "hardware.distribution": "none",
    "hardware.malloc_top_pad_mb": None,
    "training.lr_schedule": "constant",
    "training.warmup_epochs": 0.0,
    "training.resume": False,
    "training.checkpoints": "auto",
    "training.eval_batch_size": None,
    "training.steps_per_execution": 1,
    "logger": CONF_DIR / "logger" / "csv.yaml",
}


def rerun_arguments(run_dir: Path, overrides: list[str], resume: bool = False) -> list[str]:
    """Hydra command-line arguments that replay the run in `run_dir`, with `overrides` on top; `resume`
    continues it in its own folder from its last checkpointed epoch instead."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{run_dir}: no saved config at {saved}; pass a run folder written by src/run.py "
            "(outputs/runs/<time> or a multirun job folder)"
        )
    if resume:
        _check_resumable(run_dir)
    flags, overrides = _hydra_flags_first(overrides)
    launcher, overrides = _launcher_choice(overrides)
    saved_config = OmegaConf.load(saved)
    return [
        *flags,
        "--config-path",
        str(saved.parent.resolve()),
        "--config-name",
        "config",
        f"hydra.run.dir={run_dir.resolve() if resume else RERUN_DIR}",
        f"hydra.sweep.dir={RERUN_SWEEP_DIR}",
        *multirun_settings(saved_config, launcher),
        *settings_added_since(saved_config),
        # a run that was itself resumed saved training.resume=true; rerun, it starts again in a new folder
        RESUME_OVERRIDE if resume else FRESH_START_OVERRIDE,
        *backend_override(run_dir, overrides),
        *overrides,
    ]


def other_cpu_note(run_dir: Path) -> Optional[str]:
    """One line when the run trained on another CPU, or under another oneDNN cap, than this machine's: TensorFlow's
    CPU kernels differ by instruction set, so the rerun's history, deterministic on each, may differ from the
    saved one in its last digits. None when they match or the run recorded no CPU."""
    recorded, here = recorded_cpu(run_dir), cpu_description()
    if recorded is None or recorded == here:
        return None
    return (f"note: {run_dir} trained on {recorded}, this machine is {here}: the rerun's numbers may differ from "
            "its history.csv in the last digits; rerun it on that CPU for an exact replay")


# Hydra's command-line flags that take a value (`--cfg job`); an override never looks like one (it has `=`).
_FLAGS_WITH_A_VALUE = ("-c", "--cfg", "-p", "--package", "-i", "--info", "-cd", "--config-dir", "--experimental-rerun")


def _hydra_flags_first(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides): Hydra's parser takes flags only before its
    overrides, so `-m seed=1,2` must not follow the overrides a rerun puts in front of the user's."""
    flags, overrides = [], []
    remaining = iter(arguments)
    for argument in remaining:
        if not argument.startswith("-"):
            overrides.append(argument)
            continue
        flags.append(argument)
        if argument in _FLAGS_WITH_A_VALUE:
            value = next(remaining, None)
            if value is not None and "=" not in value and not value.startswith("~"):
                flags.append(value)
            elif value is not None:
                overrides.append(value)
    return flags, overrides


def multirun_settings(saved: DictConfig, launcher: Optional[str] = None) -> list[str]:
    """What conf/config.yaml gives every multirun and a saved config (the job's keys alone) lacks: a launcher
    and the leaderboard at the end. `launcher` (the rerun's `launcher=NAME`) is that launcher preset of
    today's conf/. Without one, cnnsweep's process launcher, with the run's own `launcher.*` where it ran on
    it (launcher=local|parallel; `launcher.jobs=2` then changes them as in any multirun), else its defaults,
    one job at a time: a Slurm run's settings name a cluster this machine may not reach."""
    if launcher is not None:
        settings = chosen_launcher(launcher, saved)
    else:
        settings = [f"hydra/launcher={PROCESS_LAUNCHER}"]
        if OmegaConf.select(saved, "launcher._target_") == ProcessLauncherConf._target_:
            # conf/launcher/local.yaml's own `hydra.launcher.jobs: ${launcher.jobs}`, ..., for the keys the run saved
            from_launcher_keys = OmegaConf.to_container(
                OmegaConf.load(CONF_DIR / "launcher" / "local.yaml").hydra.launcher)
            settings += [f"hydra.launcher.{name}={value}" for name, value in from_launcher_keys.items()
                         if name in saved.launcher]
    callbacks = OmegaConf.load(CONF_DIR / "config.yaml").hydra.callbacks
    return [*settings, *(f"+hydra.callbacks.{name}={_override_value(OmegaConf.to_container(callback))}"
                         for name, callback in callbacks.items())]


def chosen_launcher(name: str, saved: DictConfig) -> list[str]:
    """`launcher=NAME` over a saved config, which holds a launcher's keys but not the config group: today's
    conf/launcher/NAME.yaml composed, then given as overrides. Its `launcher.*` replace the run's (none of
    the old launcher's keys stay), and the Hydra launcher it sets up takes every setting the preset changes."""
    composed = _compose_conf(f"launcher={name}")
    plugin = composed.hydra.runtime.choices["hydra/launcher"]
    plugin_defaults = OmegaConf.to_container(_compose_conf("~launcher", f"hydra/launcher={plugin}").hydra.launcher,
                                             resolve=False)
    preset = OmegaConf.to_container(composed.hydra.launcher, resolve=False)
    return [
        *(["~launcher"] if "launcher" in saved else []),
        f"+launcher={_override_value(OmegaConf.to_container(composed.launcher))}",
        f"hydra/launcher={plugin}",
        *(f"hydra.launcher.{key}={_override_value(value)}" for key, value in preset.items()
          if plugin_defaults.get(key, _ABSENT) != value),
    ]


def _compose_conf(*overrides: str) -> DictConfig:
    """Today's conf/config.yaml with `overrides`, Hydra's own node included, its interpolations unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as error:
        choices = ", ".join(sorted(path.stem for path in (CONF_DIR / "launcher").glob("*.yaml")))
        raise ConfigError(f"{' '.join(overrides)}: no such launcher in {CONF_DIR / 'launcher'}; choose one of "
                          f"{choices}") from error


def _launcher_choice(overrides: list[str]) -> tuple[Optional[str], list[str]]:
    """(NAME of a `launcher=NAME` among the overrides, the other overrides): the config group a saved config
    cannot take directly."""
    chosen = [override for override in overrides if re.fullmatch(r"launcher=[\w-]+", override)]
    rest = [override for override in overrides if override not in chosen]
    return (chosen[-1].split("=", 1)[1] if chosen else None), rest


def settings_added_since(saved: DictConfig) -> list[str]:
    """`+key=value` for each setting the saved config predates, with the value that reproduces it."""
    added = []
    for key, value in _settings_key_by_key().items():
        if OmegaConf.select(saved, key, default=_ABSENT) is _ABSENT:
            added.append(f"+{key}={_override_value(value)}")
    return added


def _settings_key_by_key() -> dict[str, Any]:
    """SETTINGS_OLDER_RUNS_LACK with each config group's file read into its dotted keys: a group added in
    steps (a config saved with some of its keys) gets the rest."""
    settings = {}
    for key, value in SETTINGS_OLDER_RUNS_LACK.items():
        if isinstance(value, Path):
            settings.update(flat_params(OmegaConf.to_container(OmegaConf.load(value)), f"{key}."))
        else:
            settings[key] = value
    return settings


def _override_value(value: Any) -> str:
    """A value in Hydra's override grammar."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):  # quoted: paths, `%j`, `${...}` (still an interpolation) read as they are
        return "'" + value.replace("'", "\\'") + "'"
    return "null" if value is None else str(value)


_ABSENT = object()


def backend_override(run_dir: Path, overrides: list[str]) -> list[str]:
    """`hardware.backend=<the one the run used>`, unless the overrides choose one or the run recorded none."""
    if any(override.lstrip("+~").startswith("hardware.backend=") for override in overrides):
        return []
    backend = recorded_backend(run_dir)
    return [f"hardware.backend={backend}"] if backend else []


def _check_resumable(run_dir: Path) -> None:
    """Resuming trains in the run's own folder: a completed run would be overwritten, and one without a
    checkpoint would start over on top of its history, so both are refused. (A checkpoint that turns out
    to be unreadable is refused by the run itself: cnnsweep.run.checkpoints.)"""
    if RunRecord.read(run_dir).status == COMPLETED:
        raise ConfigError(f"{run_dir}: the run completed, there is nothing to resume; rerun it without --resume "
                          "(a new folder under outputs/reruns) to train it again")
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.epochs():
        raise ConfigError(f"cannot resume {run_dir}: no checkpoint in {checkpoints.folder} (the run ended before "
                          "its first epoch did, or wrote none); rerun it without --resume to train it again from "
                          "epoch 1 in a new folder")


def replay(arguments: list[str]) -> None:
    """Run src/run.py with these arguments in this process, exactly as `python src/run.py ARGS` would
    (its own one-line errors and exit code included)."""
    sys.argv = [str(RUN_SCRIPT), *arguments]
    runpy.run_path(str(RUN_SCRIPT), run_name="__main__")
