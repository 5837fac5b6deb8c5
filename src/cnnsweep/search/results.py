"""What a search writes besides its runs: multirun.yaml (the sweep config, which marks a sweep folder for
the leaderboard) and optimization_results.yaml (hydra-optuna-sweeper's keys, with trial numbers and run
folders), both without the storage password."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cnnsweep.credentials import redacted
from cnnsweep.run.records import RunRecord, write_atomic
from cnnsweep.run.timings import phase_totals, summary_line, wall_seconds
from cnnsweep.search.study import RUN_DIR_ATTR, StudySpec

log = logging.getLogger(__name__)
SWEEP_CONFIG_FILE = "multirun.yaml"
RESULTS_FILE = "optimization_results.yaml"


def write_sweep_config(sweep_dir: Path, config: DictConfig) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(sweep_dir / SWEEP_CONFIG_FILE, OmegaConf.to_yaml(redacted(config)))


def write_results(sweep_dir: Path, study: optuna.Study, spec: StudySpec) -> None:
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
    write_atomic(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))


def log_time_summary(study: optuna.Study) -> None:
    """One line: the share of the finished trials' time each phase took (data, set-up, training,
    validation, test evaluation, checkpoints, saving), from their run records."""
    runs = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        run_dir = trial.user_attrs.get(RUN_DIR_ATTR)
        if run_dir:
            fields = RunRecord.read(Path(run_dir)).fields
            runs.append((phase_totals(fields.get("timings")), wall_seconds(fields)))
    line = summary_line(runs)
    if line:
        log.info("%s", line)
