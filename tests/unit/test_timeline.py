"""A deploy's timeline from its operations: steps, overlaps, the bytes-only floor."""

from __future__ import annotations

import pytest

from podforge.core.timeline import Operation, Step, Timeline, Transfer, step_name, steps


@pytest.mark.parametrize(
    ("operation", "step"),
    [
        ("Models | Fetch 3 missing model files", "Models"),
        ("System packages | Install nginx", "System packages"),
        ("Verify: ComfyUI serves every node and runs a workflow, r2sync works", "Verify"),
        ("Timeline: print it, keep it in /opt/podforge/timeline.json", "Timeline"),
        ("Create the pod venv", "Create the pod venv"),
    ],
)
def test_an_operation_belongs_to_its_deploy_group(operation, step):
    assert step_name(operation) == step


def test_operations_of_one_step_merge_and_times_start_at_the_first():
    operations = [
        Operation("System packages | apt", 100.0, 112.0),
        Operation("Models | Model manifest", 130.0, 130.5),
        Operation("Models | Fetch 2 missing model files", 130.5, 170.0),
        Operation("Python environment | Install locks/x.txt exactly", 112.0, 130.0),
        Operation("Verify: ComfyUI serves", 170.0, 181.0),
    ]
    assert steps(operations, {"Models": Transfer(4_000_000_000)}) == [
        Step("System packages", 0.0, 12.0),
        Step("Python environment", 12.0, 30.0),
        Step("Models", 30.0, 70.0, 4_000_000_000),
        Step("Verify", 70.0, 81.0),
    ]
    assert steps([], {}) == []


def sequential() -> Timeline:
    return Timeline(
        "pod1",
        "2026-12-02T14:00:00+00:00",
        [
            Step("System packages", 0.0, 12.0),
            Step("Python environment", 12.0, 30.0),
            Step("Models", 30.0, 70.0, 4_000_000_000),
            Step("Verify", 70.0, 80.0),
        ],
    )


def test_a_sequential_deploy_overlaps_nothing_and_is_measured_against_its_bytes():
    timeline = sequential()
    assert timeline.seconds == 80.0
    assert timeline.overlaps() == []
    assert timeline.link_rate() == 100_000_000  # 4 GB in the Models step's 40 s
    assert timeline.bytes_only_seconds() == 40.0
    shown = timeline.as_json()
    assert (shown["seconds"], shown["bytes_only_seconds"], shown["ratio"]) == (80.0, 40.0, 2.0)
    assert shown["steps"][2] == {
        "name": "Models",
        "start": 30.0,
        "end": 70.0,
        "seconds": 40.0,
        "bytes": 4_000_000_000,
        "transfer_seconds": None,
    }
    assert timeline.lines() == [
        "timeline: 80.0 s from the first operation to the last",
        "  System packages         0.0 ->    12.0 s  (12.0 s)",
        "  Python environment     12.0 ->    30.0 s  (18.0 s)",
        "  Models                 30.0 ->    70.0 s  (40.0 s)  4.00 GB at 100.00 MB/s",
        "  Verify                 70.0 ->    80.0 s  (10.0 s)",
        "  overlapped: nothing (each step waited for the one before)",
        "  bytes alone: 4.00 GB at 100.00 MB/s take 40.0 s; this deploy took 80.0 s (2.00x)",
    ]


def test_steps_that_ran_at_once_are_named_with_the_time_they_shared():
    timeline = Timeline(
        "pod1",
        "2026-12-02T14:00:00+00:00",
        [
            Step("Models", 0.0, 50.0, 1_000_000_000),
            Step("Python environment", 5.0, 30.0, 2_000_000_000),
            Step("Verify", 50.0, 55.0),
        ],
    )
    assert timeline.overlaps() == [("Models", "Python environment", 25.0)]
    # The faster step (the stack's 2 GB in 25 s) says the link gives at least 80 MB/s:
    # 3 GB take 37.5 s at that rate.
    assert timeline.link_rate() == 80_000_000
    assert timeline.bytes_only_seconds() == 37.5
    assert "  overlapped: Models and Python environment for 25.0 s" in timeline.lines()


def test_a_deploy_that_downloaded_nothing_has_no_bytes_floor():
    timeline = Timeline("pod1", "2026-12-02T14:00:00+00:00", [Step("Services", 0.0, 3.0)])
    assert timeline.bytes_only_seconds() is None
    assert timeline.as_json()["ratio"] is None
    assert timeline.lines()[-1] == "  bytes alone: nothing was downloaded"


def test_a_background_fetch_is_rated_by_its_own_seconds_not_its_steps_span():
    # The models' fetch starts right after the tools and is awaited after the services: its
    # step spans 60 s, of which the download took 20 (4 GB at 200 MB/s).
    operations = [
        Operation("Pod tools | Install uv", 0.0, 5.0),
        Operation("Models | Start fetching 3 missing model files (in the background)", 5.0, 5.5),
        Operation("Python environment | Install locks/x.txt exactly", 5.5, 50.0),
        Operation("Models | Fetch 3 missing model files", 50.0, 65.0),
        Operation("Verify: ComfyUI serves", 65.0, 70.0),
    ]
    found = steps(operations, {"Models": Transfer(4_000_000_000, 20.0)})
    assert found[1] == Step("Models", 5.0, 65.0, 4_000_000_000, 20.0)
    timeline = Timeline("pod1", "2026-12-02T14:00:00+00:00", found)
    assert timeline.overlaps() == [("Models", "Python environment", 44.5)]
    assert timeline.link_rate() == 200_000_000
    assert timeline.bytes_only_seconds() == 20.0
    assert timeline.as_json()["ratio"] == 3.5
    assert Timeline.from_json(timeline.as_json()) == timeline  # as a pod keeps it
    assert (
        "  Models                  5.0 ->    65.0 s  (60.0 s)  4.00 GB at 200.00 MB/s (in 20.0 s)"
        in timeline.lines()
    )
