"""One job as one submitit job (launcher=slurm, launcher=slurm_local), under the trial contract of
cnnsweep.launch.contract: each job is submitted on its own as a slot frees up and watched until it ends.

Whatever Slurm does to a job is that job's outcome, never the sweep's: cancelled, failed, out of memory,
node failure or time limit, the run folder says `failed` with the Slurm job id and state, and the other
jobs go on. A job near its time limit (or preempted) is requeued by submitit and continues from its
last finished epoch (`training.resume=true` is added to its overrides). Two things do stop the sweep,
with one line naming the setting to change: Slurm refusing the job at submission, and a job pending for
a reason that never clears (its request does not fit the partition). Ctrl-C or SIGTERM of the sweep
passes SIGINT on to running jobs (they record `interrupted`), cancels pending ones, and cancels what is
still running after a grace period.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import submitit
from hydra.core.utils import JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from cnnsweep.errors import first_line
from cnnsweep.launch import hydra_internals
from cnnsweep.launch.contract import (
    JobCannotStart,
    JobOutcome,
    TrialJob,
    continuing,
    describe_exit,
    kept_or_unstarted,
    outcome,
)
from cnnsweep.launch.interrupts import SWEEP
from cnnsweep.run.records import INTERRUPTED, mark_failed
from cnnsweep.run.stops import remember_stop

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a job's result file is looked for
STATE_SECONDS = 10.0  # how often squeue is asked about the sweep's jobs (one call for all of them)
INTERRUPT_GRACE_SECONDS = 60.0  # a job still running this long after SIGINT is cancelled
ENDED, REFUSED = "ended", "refused"  # how a watched job ended, besides INTERRUPTED

# Pending reasons that never clear by waiting, and the preset's settings that decide them.
NEVER_STARTS = {
    "PartitionConfig": "launcher.cpus, launcher.mem_gb, launcher.gpus or launcher.partition",
    "PartitionNodeLimit": "launcher.partition",
    "PartitionTimeLimit": "launcher.timeout_min or launcher.partition",
    "BadConstraints": "launcher.cpus, launcher.mem_gb, launcher.gpus or launcher.partition",
    "InvalidAccount": "launcher.account",
    "InvalidQOS": "launcher.qos",
    "QOSMaxCpuPerJobLimit": "launcher.cpus or launcher.qos",
    "QOSMaxMemoryPerJob": "launcher.mem_gb or launcher.qos",
    "QOSMaxWallDurationPerJobLimit": "launcher.timeout_min or launcher.qos",
}
# What a job's final Slurm state means for the user, and what to change.
STATE_HINTS = {
    "OUT_OF_MEMORY": "out of memory: raise launcher.mem_gb",
    "TIMEOUT": "reached its time limit after its requeues: raise launcher.timeout_min",
    "NODE_FAIL": "its node failed: rerun the same command to run it again",
    "CANCELLED": "cancelled (scancel or the cluster)",
    "PREEMPTED": "preempted and not requeued",
}
TRACEBACK = "Traceback (most recent call last):"


@dataclass
class SlurmJobState:
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, ... ("" when Slurm does not know the job)
    reason: str  # why it is pending ("None" when it is not)
    partition: str


def run_submitit_trial(launcher: BaseSubmititLauncher, job: TrialJob, submissions: "Submissions") -> JobOutcome:
    assert launcher.hydra_context is not None and launcher.config is not None, "setup() comes first"
    job_config = hydra_internals.compose_job_config(launcher.hydra_context, launcher.config, job.overrides,
                                                    job.number)
    run_dir = hydra_internals.job_dir(job_config)
    with submissions.slots:
        kept = kept_or_unstarted(job, job_config)
        if kept is not None:
            return kept
        job = continuing(job, job_config) or job
        submissions.check()
        job.started(run_dir)
        submitted = _submit(launcher, job, submissions)
        log.info("#%d : %s (%s job %s)", job.number, " ".join(filter_overrides(job.overrides)),
                 "Slurm" if isinstance(submitted, submitit.SlurmJob) else "submitit", submitted.job_id)
        ending = _watch(submitted, launcher, submissions)
    try:
        result = submitted.result()
    except Exception as error:  # submitit: the job ended without a result
        if ending == REFUSED:
            assert submissions.error is not None
            mark_failed(run_dir, str(submissions.error))
            raise submissions.error from None
        message, status = _lost(submitted, error, interrupted=ending == INTERRUPTED)
        mark_failed(run_dir, message, status)
        # To Hydra's sweepers the job ended as a failed run does inside a multirun: with NaN.
        return JobOutcome(run_dir, message, hydra_internals.job_return(job_config, JobStatus.COMPLETED, math.nan))
    if isinstance(submitted, submitit.SlurmJob):
        _cancel_rerun(submitted.job_id, submissions.queue)
    return outcome(result, run_dir)


def prepare_for_requeue() -> None:
    """Called in a job that submitit is about to requeue, from its signal handler, which then exits with
    SystemExit. `scontrol requeue` makes Slurm SIGTERM every process of the job, the scontrol it runs among
    them; killed mid-call, scontrol fails the requeue that Slurm already accepted and the job records that
    failure as its result. Ignoring SIGTERM from here on, which the scontrol child inherits, lets scontrol
    answer; the job exits right after it, and SIGKILL still ends it after KillWait. Should the handler run
    inside a finalizer, which drops its SystemExit, training raises it again (cnnsweep.run.stops)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    remember_stop(SystemExit(-1))


def _cancel_rerun(job_id: str, queue: SlurmQueue) -> None:
    """A job requeued after it had written its result (`scontrol requeue` gives it KillWait seconds, in
    which it may finish) would train again over a recorded run: it is cancelled before it starts."""
    state = queue.state(job_id, fresh=True)
    if state.state == "PENDING" or state.state.startswith("REQUEUE"):
        _scancel(job_id)
        log.warning("Slurm job %s was requeued after it had finished; its second run is cancelled", job_id)


class Submissions:
    """The sweep process's side of its jobs: at most `slots` submitted at once, what the queue says of
    them, and the first JobCannotStart, after which every job not yet running ends with it."""

    def __init__(self, slots: int) -> None:
        self.slots = threading.BoundedSemaphore(slots)
        self.queue = SlurmQueue()
        self.error: Optional[JobCannotStart] = None
        self._lock = threading.Lock()

    def refuse(self, error: JobCannotStart) -> JobCannotStart:
        with self._lock:
            self.error = self.error or error
            return self.error

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _submit(launcher: BaseSubmititLauncher, job: TrialJob, submissions: Submissions) -> submitit.Job:
    executor = _executor(launcher)
    try:
        return executor.submit(launcher, list(job.overrides), "hydra.sweep.dir", job.number,
                               f"job_id_for_{job.number}", hydra_internals.hydra_state())
    except Exception as error:
        raise submissions.refuse(submission_error(job.number, error)) from None


def submission_error(number: int, error: Exception) -> JobCannotStart:
    """Why job `number` was not submitted: sbatch's own message when sbatch refused it (submitit raises
    its stderr, from the CalledProcessError), else the exception itself (sbatch missing, a pickling
    error, an unwritable .submitit folder)."""
    if isinstance(error.__cause__, subprocess.CalledProcessError):
        lines = [line.strip() for line in str(error).splitlines() if "error:" in line] or [first_line(error)]
        reason = lines[-1].split("error:", 1)[-1].strip()
        return JobCannotStart(
            f"Slurm refused job {number}: {reason}; change launcher.partition, launcher.cpus, launcher.mem_gb "
            f"or launcher.gpus (null for CPU-only jobs) to fit the cluster (sinfo -o '%P %c %m %G' lists it)")
    return JobCannotStart(f"job {number} could not be submitted: {type(error).__name__}: {first_line(error)}")


def _executor(launcher: BaseSubmititLauncher) -> submitit.AutoExecutor:
    """The executor hydra-submitit-launcher builds for a batch, built here for one job."""
    cluster = launcher._EXECUTOR  # noqa: SLF001  (local | slurm)
    params = dict(launcher.params)
    folder = params.pop("submitit_folder")
    init = {f"{cluster}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in shared else f"{cluster}_{key}": value
                                  for key, value in params.items()})
    return executor


def _watch(submitted: submitit.Job, launcher: BaseSubmititLauncher, submissions: Submissions) -> str:
    """Wait for the job to end. Returns ENDED, INTERRUPTED (the sweep's interrupt stopped it) or REFUSED
    (cancelled while pending, because this or another job of the sweep can never start)."""
    on_slurm = isinstance(submitted, submitit.SlurmJob)
    ending, signalled_at = ENDED, 0.0
    next_state = time.monotonic() + STATE_SECONDS
    with submissions.queue.watching(submitted.job_id) if on_slurm else nullcontext():
        while not submitted.paths.result_pickle.exists():
            time.sleep(POLL_SECONDS)
            now = time.monotonic()
            if SWEEP.requested and ending == ENDED:
                ending, signalled_at = INTERRUPTED, now
                _pass_interrupt(submitted, on_slurm, submissions.queue)
            elif ending == INTERRUPTED and now - signalled_at > INTERRUPT_GRACE_SECONDS:
                submitted.cancel(check=False)
                signalled_at = float("inf")
            if now < next_state:
                continue
            next_state = now + STATE_SECONDS
            if not on_slurm:
                if submitted.done(force_check=True):
                    break
                continue
            state = submissions.queue.state(submitted.job_id)
            if state.state == "PENDING" and ending == ENDED:
                if state.reason in NEVER_STARTS:
                    submissions.refuse(_cannot_start(submitted.job_id, state, launcher.params))
                if submissions.error is not None:
                    _scancel(submitted.job_id)
                    ending = REFUSED
            if state.state == "" and submitted.done(force_check=True):  # left the queue: sacct has its end
                break
    return ending


def _pass_interrupt(submitted: submitit.Job, on_slurm: bool, queue: SlurmQueue) -> None:
    """SIGINT to a running job (it records `interrupted`); a pending one is cancelled."""
    if not on_slurm:
        submitted.cancel(check=False)  # submitit's local executor sends SIGINT
    elif queue.state(submitted.job_id, fresh=True).state == "PENDING":
        _scancel(submitted.job_id)
    else:
        _scancel(submitted.job_id, "--signal=INT")


def _scancel(job_id: str, *options: str) -> None:
    """Cancel (or signal) a job; one already gone is no error."""
    subprocess.run(["scancel", *options, job_id], check=False, capture_output=True)


class SlurmQueue:
    """What squeue says of the sweep's jobs, from one call for all of them at most every STATE_SECONDS
    (a sweep of many jobs asks the scheduler once, not once per job). A job that has left the queue
    (ended, or unknown to squeue) has state ""."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: set[str] = set()
        self._states: dict[str, SlurmJobState] = {}
        self._asked = -math.inf

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """The job is asked about with the others while the block runs."""
        with self._lock:
            self._jobs.add(job_id)
            self._asked = -math.inf  # a new job: ask at the next look
        try:
            yield
        finally:
            with self._lock:
                self._jobs.discard(job_id)

    def state(self, job_id: str, fresh: bool = False) -> SlurmJobState:
        with self._lock:
            if fresh or time.monotonic() - self._asked >= STATE_SECONDS:
                self._states = _squeue(sorted(self._jobs | {job_id}))
                self._asked = time.monotonic()
            return self._states.get(job_id, SlurmJobState("", "", ""))


def _squeue(job_ids: list[str]) -> dict[str, SlurmJobState]:
    try:
        lines = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%P"], capture_output=True,
                               text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    fields = [line.split("|") for line in lines if line.count("|") == 3]
    return {job_id: SlurmJobState(state, reason, partition) for job_id, state, reason, partition in fields}


def _cannot_start(job_id: str, state: SlurmJobState, params: dict[str, Any]) -> JobCannotStart:
    asked = f"{params.get('cpus_per_task')} CPUs, {params.get('mem_gb')} GB"
    if params.get("gpus_per_node"):
        asked += f", {params['gpus_per_node']} GPU(s)"
    largest = largest_node(state.partition)
    offers = fits = ""
    if largest is not None:
        cpus, memory_gb, gres = largest
        offers = f"; partition {state.partition}'s largest node: {cpus} CPUs, {memory_gb} GB, {gres or 'no GPU'}"
        fits = f" (at most launcher.cpus={cpus} launcher.mem_gb={memory_gb}{'' if gres else ' launcher.gpus=null'})"
    return JobCannotStart(
        f"Slurm job {job_id} cannot start: pending with reason {state.reason} (it asks for {asked}{offers}); "
        f"change {NEVER_STARTS[state.reason]} to fit{fits}, then rerun")


def largest_node(partition: str) -> Optional[tuple[int, int, str]]:
    """CPUs, memory in GB and GPUs (gres, "" for none) of a partition's largest node, as sinfo reports it."""
    try:
        rows = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%c|%m|%G"], capture_output=True, text=True,
                              timeout=60).stdout.split()
        cpus, memory_mb, gres = max((row.split("|") for row in rows), key=lambda row: (int(row[0]), int(row[1])))
        return int(cpus), int(memory_mb) // 1024, "" if gres == "(null)" else gres
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def _lost(submitted: submitit.Job, error: Exception, interrupted: bool) -> tuple[str, str]:
    """Why a job ended without a result, with its Slurm id and state, and the run status that says so."""
    stderr = _read(submitted.paths.stderr)
    if isinstance(submitted, submitit.SlurmJob):
        state, exit_code = final_state(submitted.job_id)
        job = f"Slurm job {submitted.job_id} ({state})"
    else:  # the local executor's controller process outlives the job's: neither state nor exit code
        state, exit_code, job = "", None, f"submitit job {submitted.job_id}"
    if interrupted:
        return f"interrupted: the sweep stopped {job}", INTERRUPTED
    return f"{job} ended without a result: {lost_because(state, exit_code, str(error), stderr)}", "failed"


def lost_because(state: str, exit_code: Optional[int], error: str, stderr: str) -> str:
    """What ended a job without a result, in the words of whoever knows: Slurm's state where it says
    what happened (out of memory, time limit, node failure, cancelled), the exception submitit caught in
    the job, the signal that killed its process, a Python traceback on its stderr (a crash before
    submitit could catch it), its exit code; where none of them is known (submitit's local executor),
    that it left nothing."""
    hint = STATE_HINTS.get(state.split(" ")[0]) if state else None
    if hint is not None:
        return hint
    raised = raised_in(error)
    if raised is None and (exit_code is None or exit_code >= 0):
        raised = raised_in(stderr)
    if raised is not None:
        return f"its Python raised {raised}"
    if exit_code is not None:
        return f"its process ended with {describe_exit(exit_code)}" + (" and no Python traceback" if exit_code >= 0
                                                                        else "")
    return "its process left no result and no Python traceback: it was killed, or crashed outside Python"


def raised_in(text: str) -> Optional[str]:
    """The exception line that closes the last Python traceback in `text`, if it has one."""
    start = text.rfind(TRACEBACK)
    if start < 0:
        return None
    lines = text[start + len(TRACEBACK):].splitlines()
    return next((line.strip() for line in lines if line.strip() and not line[0].isspace()
                 and not line.startswith("---")), None)


def final_state(job_id: str) -> tuple[str, Optional[int]]:
    """The job's state as sacct reports it, and the return code of its process (negative: the signal that
    killed it); a state that names the failure when sacct cannot answer."""
    try:
        done = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "JobID,State,ExitCode"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"state unknown: sacct failed: {first_line(error)}", None
    if done.returncode != 0:
        return f"state unknown: sacct failed: {first_line(done.stderr) or f'exit code {done.returncode}'}", None
    return sacct_state(done.stdout, job_id)


def sacct_state(output: str, job_id: str) -> tuple[str, Optional[int]]:
    """State and return code of `job_id` from `sacct -n -P -o JobID,State,ExitCode` output: the state of
    the job itself, and the code of its srun step (`ID.0`, where a signal that killed Python shows; the
    job's own line then has the step's signal as an exit code), else of the job. ExitCode is `code:signal`."""
    rows = {fields[0]: fields[1:] for fields in (line.split("|") for line in output.splitlines())
            if len(fields) == 3}
    if job_id not in rows:
        return "state unknown: sacct has no record of the job", None
    state, job_exit = rows[job_id]
    steps = [exit_code for step, (_, exit_code) in rows.items()
             if step.startswith(f"{job_id}.") and step.split(".", 1)[1].isdigit()]
    signalled = [code for code in map(_returncode, [*steps, job_exit]) if code is not None and code < 0]
    return state, signalled[0] if signalled else _returncode(job_exit)


def _returncode(exit_code: str) -> Optional[int]:
    """sacct's `code:signal` as a return code (negative: the signal that ended the process)."""
    code, _, signal_number = exit_code.partition(":")
    try:
        return -int(signal_number) if int(signal_number or 0) else int(code)
    except ValueError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
