"""fleet/runs.py: batches, the failure budget, the report's table and file."""

from __future__ import annotations

import pytest

from fleet.runs import (
    PodRun,
    batches,
    budget_spent,
    failed_hosts,
    failure_budget,
    read_report,
    render_table,
    write_report,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, [[1, 2, 3, 4, 5]]),
        (0, [[1, 2, 3, 4, 5]]),
        (2, [[1, 2], [3, 4], [5]]),
        (5, [[1, 2, 3, 4, 5]]),
        (9, [[1, 2, 3, 4, 5]]),
    ],
)
def test_batches_keep_order_and_cover_every_pod_once(size, expected):
    assert batches([1, 2, 3, 4, 5], size) == expected


def test_a_negative_batch_is_refused():
    with pytest.raises(ValueError, match="positive"):
        batches([1], -1)


@pytest.mark.parametrize(
    ("total", "percent", "failed", "spent"),
    [
        (10, None, 10, False),  # no budget: never stop
        (10, 0, 0, False),
        (10, 0, 1, True),  # 0 %: the first failure stops later batches
        (10, 20, 2, False),  # 2 of 10 may fail
        (10, 20, 3, True),
        (3, 50, 1, False),  # floor(1.5) = 1
        (3, 50, 2, True),
        (4, 100, 4, False),
    ],
)
def test_the_budget_is_a_share_of_all_pods(total, percent, failed, spent):
    assert budget_spent(failed, failure_budget(total, percent)) is spent


def test_a_percent_outside_0_to_100_is_refused():
    with pytest.raises(ValueError, match="0 to 100"):
        failure_budget(10, 120)


RUNS = [
    PodRun(
        pod="pod1",
        host="127.0.0.2",
        gpu="NVIDIA GeForce RTX 4090",
        tier="prosumer",
        stack="torch25-cu124",
        variants={"wan22": {"precision": "gguf", "quant": "q5_0"}, "dwpose": "onnx"},
        gb_fetched=14.3,
        changed=12,
        duration_s=95.25,
        status="ok",
    ),
    PodRun(
        pod="pod2",
        host="127.0.0.3",
        gpu="NVIDIA H100 80GB HBM3",
        tier="datacenter",
        stack="torch28-cu128",
        changed=3,
        duration_s=20.0,
        status="failed",
        cause="Models | Fetch 2 missing model files: Socket is closed",
    ),
    PodRun(pod="pod3", host="127.0.0.4", cause="failure budget spent"),
]


def test_the_table_has_a_line_per_pod_and_its_cause_under_it():
    lines = render_table(RUNS).splitlines()
    assert lines[0].split() == [
        "POD",
        "GPU",
        "TIER",
        "STACK",
        "VARIANTS",
        "GB",
        "CHANGED",
        "TIME",
        "STATUS",
    ]
    assert "torch28-cu128" in lines[2]
    assert (
        lines[1].startswith("pod1 ")
        and "dwpose=onnx,wan22=gguf:q5_0" in lines[1]
        and "14.30" in lines[1]
    )
    assert lines[1].rstrip().endswith("ok") and "95.2s" in lines[1]
    assert lines[2].startswith("pod2 ") and lines[2].rstrip().endswith("failed")
    assert lines[3] == "    cause: Models | Fetch 2 missing model files: Socket is closed"
    assert lines[4].startswith("pod3 ") and lines[4].rstrip().endswith("not run")
    assert lines[-1] == "1 ok, 1 failed, 1 not run; rerun them with --limit last_failed"
    # Columns line up: every STATUS starts where the header's does.
    column = lines[0].index("STATUS")
    assert {lines[i][column:].split()[0] for i in (1, 2, 4)} == {"ok", "failed", "not"}


def test_the_report_file_round_trips_and_names_what_to_rerun(tmp_path):
    path = tmp_path / ".podforge" / "last-run.json"
    assert failed_hosts(path) == []  # no report yet: nothing to rerun
    write_report(path, RUNS)
    assert read_report(path) == RUNS
    assert failed_hosts(path) == ["127.0.0.3", "127.0.0.4"]
    assert not path.with_name("last-run.json.partial").exists()
