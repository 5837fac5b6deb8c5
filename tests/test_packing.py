"""launcher.jobs_per_gpu=auto (cnnsweep.launch.packing): jobs packed onto fake GPUs by the peak memory the
finished jobs report, with real threads waiting for their slots. The end-to-end run of a sweep with
jobs_per_gpu=auto is in test_parallel.py."""

from __future__ import annotations

import logging
import re
import threading
from typing import Optional

import pytest

from cnnsweep.errors import ConfigError
from cnnsweep.launch.devices import FixedSlots, Slot
from cnnsweep.launch.packing import MARGIN, USABLE, GpuPacking, jobs_that_fit
from cnnsweep.launch.process_launcher import slot_allocator
from cnnsweep.run.slot import GPU_SHARE_ENV, JOBS_PER_GPU_ENV

MB = 2**20
GPU_MB = 1000  # each fake GPU's memory


def packing(gpus=("g0", "g1"), most: int = 4, limit: Optional[int] = None) -> GpuPacking:
    return GpuPacking(list(gpus), most, limit, 1, lambda gpu: GPU_MB)


class Waiting:
    """acquire() on a thread of its own, so a test can see it wait and then get its slot."""

    def __init__(self, pool: GpuPacking, alone: bool = False) -> None:
        self.slot: Optional[Slot] = None
        self.thread = threading.Thread(target=lambda: setattr(self, "slot", pool.acquire(alone)), daemon=True)
        self.thread.start()

    def still_waiting(self) -> bool:
        self.thread.join(0.3)
        return self.thread.is_alive()

    def got(self) -> Slot:
        self.thread.join(10)
        assert self.slot is not None, "acquire() did not return"
        return self.slot


@pytest.mark.parametrize(("peak_fraction", "most", "jobs"), [
    (0.01, 16, 16),   # small jobs: as many as the cores allow
    (0.1, 16, 7),     # 0.9 usable / (0.1 x 1.25)
    (0.3, 16, 2),
    (0.5, 16, 1),     # never fewer than one
    (0.95, 16, 1),
    (0.1, 4, 4),
])
def test_jobs_that_fit_the_usable_memory_with_a_margin(peak_fraction: float, most: int, jobs: int) -> None:
    assert jobs_that_fit(peak_fraction, most) == jobs
    if jobs > 1:
        assert jobs * peak_fraction * MARGIN <= USABLE


def test_one_job_per_gpu_until_measured_then_packed_by_the_peak() -> None:
    pool = packing()
    first, second = pool.acquire(), pool.acquire()
    assert [(slot.gpu, slot.gpu_share) for slot in (first, second)] == [("g0", USABLE), ("g1", USABLE)]
    third = Waiting(pool)
    assert third.still_waiting()  # both GPUs hold an unmeasured job
    pool.release(first, job=0, peak_bytes=100 * MB)  # a tenth of g0: 7 would fit, 4 cores' worth allowed
    assert pool.per_gpu == 4 and third.got().gpu == "g0" and third.got().gpu_share == pytest.approx(USABLE / 4)
    more = [pool.acquire() for _ in range(3)]
    assert [slot.gpu for slot in more] == ["g0"] * 3  # g1's unmeasured job still holds 0.9 of it
    assert len({slot.index for slot in [third.got(), *more]}) == 4
    fifth = Waiting(pool)
    assert fifth.still_waiting()  # g0 is full, g1 has no room beside its 0.9 job
    pool.release(second, job=1, peak_bytes=90 * MB)  # a smaller peak changes nothing
    assert fifth.got().gpu == "g1" and pool.per_gpu == 4
    assert all(slot.environment()[JOBS_PER_GPU_ENV] == "auto" for slot in more)
    assert more[0].environment()[GPU_SHARE_ENV] == f"{USABLE / 4:.6g}"


def test_a_bigger_model_lowers_the_count_for_the_jobs_that_start_after_it() -> None:
    pool = packing(gpus=["g0"])
    pool.release(pool.acquire(), job=0, peak_bytes=50 * MB)
    running = [pool.acquire() for _ in range(4)]
    pool.release(running.pop(), job=3, peak_bytes=300 * MB)  # 0.3 of the GPU: 2 fit
    assert pool.per_gpu == 2
    waiting = Waiting(pool)
    assert waiting.still_waiting()  # three jobs of 0.225 run; one of 0.45 does not fit beside them
    pool.release(running.pop(), job=2, peak_bytes=None)
    assert waiting.still_waiting()  # two of 0.225 and one of 0.45 would be 0.9 but count 3 jobs > 2
    pool.release(running.pop(), job=1, peak_bytes=None)
    assert waiting.got().gpu_share == pytest.approx(USABLE / 2)


def test_a_job_alone_waits_for_an_empty_gpu_and_holds_back_the_others() -> None:
    pool = packing()
    pool.release(pool.acquire(), job=0, peak_bytes=100 * MB)
    on_g0, on_g1 = pool.acquire(), pool.acquire()
    alone = Waiting(pool, alone=True)
    assert alone.still_waiting()
    shared = Waiting(pool)
    assert shared.still_waiting()  # room on both GPUs, but the job alone goes first
    pool.release(on_g1, job=2, peak_bytes=None)
    assert (alone.got().gpu, alone.got().gpu_share) == ("g1", USABLE)
    assert shared.got().gpu == "g0"  # g1 is the lone job's
    pool.release(on_g0, job=1, peak_bytes=None)


def test_without_a_measurement_it_stays_one_job_per_gpu_and_says_so_once(caplog) -> None:
    pool = packing(gpus=["g0"])
    with caplog.at_level(logging.WARNING, logger="cnnsweep.launch.packing"):
        pool.release(pool.acquire(), job=0, peak_bytes=None)
        pool.release(pool.acquire(), job=1, peak_bytes=None)
    assert pool.per_gpu == 1
    assert [record.getMessage() for record in caplog.records] == [
        "launcher.jobs_per_gpu=auto: job 0 measured no GPU memory (it ran on the CPU); one job per GPU until a job "
        "measures it"]


def test_an_unreadable_gpu_memory_keeps_one_job_per_gpu(caplog) -> None:
    def no_driver(gpu: str) -> int:
        raise ConfigError(f"launcher.jobs_per_gpu: cannot read GPU {gpu}'s memory with nvidia-smi (gone)")

    pool = GpuPacking(["g0"], 4, None, 1, no_driver)
    with caplog.at_level(logging.WARNING, logger="cnnsweep.launch.packing"):
        pool.release(pool.acquire(), job=0, peak_bytes=10 * MB)
    assert pool.per_gpu == 1 and "cannot read GPU g0's memory" in caplog.text


def test_launcher_jobs_caps_the_jobs_at_once_over_all_gpus() -> None:
    pool = packing(limit=3)
    assert len(pool.slots) == 3
    pool.release(pool.acquire(), job=0, peak_bytes=10 * MB)
    running = [pool.acquire() for _ in range(3)]
    assert Waiting(pool).still_waiting()
    assert sorted(slot.gpu for slot in running) == ["g0", "g0", "g1"]  # the least busy GPU first


def test_slot_allocator_packs_only_with_auto_and_gpus() -> None:
    auto = slot_allocator(None, ["a", "b"], "auto", cores=8)
    assert isinstance(auto, GpuPacking) and (auto.most, len(auto.slots)) == (4, 8)
    assert isinstance(slot_allocator(None, 0, "auto", cores=8), FixedSlots)  # no GPUs: nothing to pack
    assert [slot.gpu_share for slot in slot_allocator(None, ["a"], 2, cores=8).slots] == [0.5, 0.5]
    with pytest.raises(ConfigError, match=re.escape("launcher.jobs_per_gpu=many: must be a positive number of jobs "
                                                    "sharing each GPU (1: a GPU per job), or auto")):
        slot_allocator(None, ["a"], "many", cores=8)
    with pytest.raises(ConfigError, match=re.escape("launcher.jobs=0: must be a positive number")):
        slot_allocator(0, ["a"], "auto", cores=8)
