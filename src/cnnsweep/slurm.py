"""One trial as one submitit job (launcher=slurm, launcher=slurm_local), under the trial contract of
cnnsweep.launching: every call builds its own executor, so trials go out one by one as slots free up,
and a job that submitit reports as lost (cancelled, killed, timed out) is a failed trial, not an error
that ends the sweep."""

from __future__ import annotations

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from cnnsweep import hydra_internals
from cnnsweep.launching import JobOutcome, TrialJob, failed, outcome


def run_submitit_trial(launcher: BaseSubmititLauncher, job: TrialJob) -> JobOutcome:
    assert launcher.hydra_context is not None and launcher.config is not None, "setup() comes first"
    job_config = hydra_internals.compose_job_config(launcher.hydra_context, launcher.config, job.overrides,
                                                    job.number)
    run_dir = hydra_internals.job_dir(job_config)
    job.started(run_dir)
    try:
        [result] = launcher.launch([list(job.overrides)], job.number)
    except Exception as error:  # submitit: the job ended without a result
        reason = (str(error).strip().splitlines() or [""])[0]
        return failed(run_dir, f"submitit job failed ({type(error).__name__}: {reason})")
    return outcome(result, run_dir)
