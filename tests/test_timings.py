"""Where a run's seconds go: the stopwatch a run keeps (metrics.json `timings`) and the one line a search
prints from its trials' records. TensorFlow-free; the real phases of real runs are checked in test_search."""

from __future__ import annotations

import time

from cnnsweep.run.timings import Stopwatch, merged, phase_totals, summary_line, wall_seconds


def test_the_stopwatch_adds_phases_and_keeps_each_epoch() -> None:
    stopwatch = Stopwatch()
    with stopwatch.measure("data"):
        time.sleep(0.02)
    stopwatch.epoch(1, train=2.0, validate=0.5, checkpoint=0.25)
    stopwatch.epoch(2, train=1.5, validate=0.5, checkpoint=0.25)
    timings = stopwatch.as_dict()
    assert 0.02 <= timings["data"] < 1
    assert (timings["train"], timings["validate"], timings["checkpoint"]) == (3.5, 1.0, 0.5)
    assert timings["epochs"] == [{"epoch": 1, "train": 2.0, "validate": 0.5, "checkpoint": 0.25},
                                 {"epoch": 2, "train": 1.5, "validate": 0.5, "checkpoint": 0.25}]


def test_the_tasks_and_the_trainers_timings_make_one_run_in_phase_order() -> None:
    task = {"data": 0.5, "setup": 3.0, "epochs": []}
    trainer = {"save": 0.1, "build": 0.2, "train": 2.0, "epochs": [{"epoch": 1, "train": 2.0}]}
    combined = merged(task, trainer, None)
    assert list(combined) == ["data", "setup", "build", "train", "save", "epochs"]
    assert combined["epochs"] == [{"epoch": 1, "train": 2.0}] and combined["setup"] == 3.0


def test_a_record_without_usable_timings_adds_nothing() -> None:
    assert phase_totals(None) == {} and phase_totals({"epochs": []}) == {}
    assert phase_totals({"train": 3, "test": "slow", "warmup": 9.0}) == {"train": 3.0}
    assert wall_seconds({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": "2026-11-30T10:01:30+00:00"}) == 90
    assert wall_seconds({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": None}) is None


def test_the_summary_gives_each_phase_its_share_largest_first() -> None:
    runs = [({"train": 60.0, "test": 10.0, "setup": 5.0}, 100.0),  # 25 s not in any phase
            ({"train": 40.0, "validate": 10.0, "data": 5.0, "test": 10.0}, 70.0),
            ({}, 50.0)]  # a run that recorded no timings (an app that is not a cnnsweep run): left out
    line = summary_line(runs)
    assert line == ("where the time of 2 runs went (85.0 s each on average): training 59%, test evaluation 12%, "
                    "validation 6%, data 3%, set-up (framework import, devices) 3%, other 18%")
    assert summary_line([({}, 10.0)]) is None and summary_line([]) is None
    assert summary_line([({"train": 4.0}, None)]) == "where the time of 1 run went (4.0 s each on average): training 100%"
