"""The stack lock's format and judgements: the committed lock, header round trips, what a
stale lock names, which entries a pod installs, and how a venv drifts from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from podforge.controller.stack import committed_tools_lock
from podforge.controller.upstream import requirement_texts
from podforge.core.config import Settings
from podforge.core.lock import (
    LOCK_TARGETS,
    LockError,
    changes,
    check_command,
    drift,
    entries,
    for_pod,
    holds,
    lock_file,
    lock_inputs,
    lock_name,
    lock_pins,
    marked,
    moved,
    preferences,
    read_header,
    read_resolved_as_of,
    refresh_command,
    render_header,
    seeds_to_remove,
    sync_commands,
    sync_text,
)
from podforge.core.pins import RepoPin
from podforge.core.stacks import (
    DEFAULT_STACK,
    OPENMMLAB,
    OPENMMLAB_STACK,
    STACK_PROFILES,
    TOOLS_LOCK,
)

REPO = Path(__file__).resolve().parents[2]
PROFILE = STACK_PROFILES[DEFAULT_STACK]
TEXTS = {"ComfyUI": "torch\nnumpy>=1.25.0\n", "ComfyUI-GGUF": "gguf>=0.13.0\n", "Bare": None}

# A few entries with markers (as `marked` and uv write them), hashes and "# via" comments.
LOCK_BODY = """\
async-timeout==5.0.1 ; python_full_version < '3.11' \\
    --hash=sha256:39e3809566ff85354557ec2398b55e096c8364bacac9405a7a1fa429e77fe76c
    # via aiohttp
numpy==1.26.4 \\
    --hash=sha256:03a8c78d01d9781b28a6989f6fa1bb2c4f2d51201cf99d3dd875df6fbd96b23b \\
    --hash=sha256:08beddf13648eb95f8d867350f6a018a4be2e5ad54c8d8caed89ebca558b2010
    # via
    #   -r ComfyUI/requirements.txt
    #   gguf
opencv-contrib-python==4.11.0.86 \\
    --hash=sha256:085ad9b77c18853ea66283e98affefe2de8cc4c1f43eda4c100cf9b2721142ec
    # via -r comfyui_controlnet_aux/requirements.txt
opencv-python==4.11.0.86 \\
    --hash=sha256:03d60ccae62304860d232272e4a4fda93c39d595780cb40b161b310244b736a4
    # via -r ComfyUI-KJNodes/requirements.txt
triton==3.1.0 ; python_full_version < '3.13' and platform_machine == 'x86_64' and sys_platform \
== 'linux' \\
    --hash=sha256:6b0dd10a925263abbe9fa37dcde67a5e9b2383fc269fdf59f5657cac38c5d1d8
    # via torch
"""


@pytest.mark.parametrize("profile", sorted(STACK_PROFILES))
def test_every_profile_has_a_committed_lock_matching_the_default_settings(profile):
    # The lock in the repo answers today's pins, constraints and requirement files: a deploy
    # with the default settings is not refused (the mirror of shared/upstream holds the pins).
    text = (REPO / lock_file(profile)).read_text()
    locked = read_header(text, lock_file(profile))
    today = lock_inputs(STACK_PROFILES[profile], requirement_texts(lock_pins(Settings())))
    assert changes(locked, today) == []
    assert locked.digest() == today.digest()
    assert read_resolved_as_of(text) is not None  # a re-lock reads the index as of then
    names = {entry.name: entry.version for entry in entries(text)}
    assert names["torch"] == STACK_PROFILES[profile].torch
    assert names["setuptools"] and "uv" not in names and "boto3" not in names  # tools apart


def test_the_openmmlab_lock_is_current_holds_the_packs_and_leaves_mmcv_to_the_wheelhouse():
    name = lock_name(OPENMMLAB_STACK, OPENMMLAB)
    assert name == "torch25-cu124+openmmlab"
    text = (REPO / lock_file(name)).read_text()
    locked = read_header(text, lock_file(name))
    profile = STACK_PROFILES[OPENMMLAB_STACK]
    today = lock_inputs(profile, requirement_texts(lock_pins(Settings())), OPENMMLAB)
    assert changes(locked, today) == [] and locked.digest() == today.digest()
    names = {entry.name: entry.version for entry in entries(text)}
    assert (names["mmengine"], names["mmdet"], names["mmpose"]) == ("0.10.7", "3.3.0", "1.3.2")
    assert names["torch"] == profile.torch
    assert int(names["setuptools"].split(".")[0]) < 81  # mmcv's setup.py imports pkg_resources
    assert "mmcv" not in names and "chumpy" not in names  # the wheelhouse's; dropped
    # The profile's own lock is untouched by the feature: its digest is the same as before.
    plain = read_header((REPO / lock_file(profile.name)).read_text(), "plain")
    assert plain.overrides == [] and "mmpose==1.3.2" not in plain.tools


def test_a_features_lock_is_refreshed_with_its_flag_and_its_overrides_round_trip():
    inputs = lock_inputs(PROFILE, TEXTS, OPENMMLAB)
    assert refresh_command(inputs.profile) == (
        f"podforge stack lock --profile {PROFILE.name} --with openmmlab"
    )
    text = render_header(inputs, "2026-12-02T00:00:00Z") + LOCK_BODY
    assert read_header(text, "locks/x.txt") == inputs
    assert "# input override: chumpy ; sys_platform == 'never'" in text
    without = inputs.model_copy(update={"overrides": []})
    assert changes(inputs, without) == ["overrides: -chumpy ; sys_platform == 'never'"]


def test_the_tools_lock_is_current_and_goes_stale_with_the_pod_extra(tmp_path):
    # The one list of what the tools need (pyproject.toml's pod extra) feeds the tools lock:
    # the committed lock answers it; a changed list makes it stale, naming the tool.
    assert committed_tools_lock(REPO)[2] is None
    (tmp_path / "locks").mkdir()
    shutil.copy(REPO / lock_file(TOOLS_LOCK), tmp_path / "locks")
    pyproject = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace('"boto3>=1.36,<2",  # r2sync', '"boto3>=1.37,<2",  # r2sync')
    )
    _, _, problem = committed_tools_lock(tmp_path)
    assert problem is not None and "tools: +boto3>=1.37,<2, -boto3>=1.36,<2" in problem
    assert "podforge stack lock --profile tools" in problem


@pytest.mark.parametrize(
    ("profile", "torch", "cuda_runtime", "transformers_major"),
    [("torch25-cu124", "2.5.1", "12.4.127", "4"), ("torch28-cu128", "2.8.0", "12.8.90", "5")],
)
def test_each_lock_holds_its_cuda_build(profile, torch, cuda_runtime, transformers_major):
    names = {
        entry.name: entry.version for entry in entries((REPO / lock_file(profile)).read_text())
    }
    assert names["torch"] == torch
    assert names["nvidia-cuda-runtime-cu12"] == cuda_runtime
    # transformers 5 needs torch.accelerator (torch >= 2.6): capped on torch 2.5 alone.
    assert names["transformers"].split(".")[0] == transformers_major


def test_the_header_round_trips_its_inputs():
    inputs = lock_inputs(PROFILE, TEXTS)
    text = render_header(inputs, "2026-12-02T00:00:00Z") + LOCK_BODY
    assert read_header(text, "locks/x.txt") == inputs
    assert read_resolved_as_of(text) == "2026-12-02T00:00:00Z"
    assert read_resolved_as_of(LOCK_BODY) is None
    assert f"# inputs-digest: {inputs.digest()}" in text
    assert "# input requirements: Bare none" in text


def test_a_relock_says_what_moved():
    after = LOCK_BODY.replace("numpy==1.26.4", "numpy==1.26.5").replace(
        "triton==3.1.0", "einops==0.8.1"
    )
    assert moved(LOCK_BODY, after) == [
        "einops 0.8.1 (new)",
        "numpy 1.26.4 -> 1.26.5",
        "triton 3.1.0 (dropped)",
    ]
    assert moved(LOCK_BODY, LOCK_BODY) == []


def test_a_file_without_a_header_is_named():
    with pytest.raises(LockError, match=r"^locks/x.txt has no podforge lock header"):
        read_header(LOCK_BODY, "locks/x.txt")


def test_a_moved_pin_with_the_same_requirements_keeps_the_lock():
    # The key is what was resolved, not commit ids.
    assert lock_inputs(PROFILE, TEXTS).digest() == lock_inputs(PROFILE, dict(TEXTS)).digest()


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ({**TEXTS, "ComfyUI-GGUF": "gguf>=0.17.1\n"}, ["ComfyUI-GGUF's requirements.txt changed"]),
        ({**TEXTS, "ComfyUI-New": "onnx\n"}, ["ComfyUI-New is new"]),
        ({"ComfyUI": TEXTS["ComfyUI"], "Bare": None}, ["ComfyUI-GGUF is no longer installed"]),
        ({**TEXTS, "Bare": "einops\n"}, ["Bare's requirements.txt changed"]),
    ],
)
def test_a_stale_lock_names_the_repository_that_changed(texts, expected):
    assert changes(lock_inputs(PROFILE, TEXTS), lock_inputs(PROFILE, texts)) == expected


def test_a_stale_lock_names_a_changed_constraint_or_pin():
    locked = lock_inputs(PROFILE, TEXTS)
    today = locked.model_copy(
        update={
            "constraints": [*locked.constraints[1:], "numpy<2.1"],
            "pins": ["torch==2.5.0", *locked.pins[1:]],
        }
    )
    assert changes(locked, today) == [
        "pins: +torch==2.5.0, -torch==2.5.1",
        "constraints: +numpy<2.1, -numpy<2",
    ]
    assert locked.digest() != today.digest()


def test_the_lock_covers_every_features_nodes_and_the_users_pins():
    mine = RepoPin(
        name="ComfyUI-WanAnimatePreprocess", url="https://example.org/x", commit="a" * 40
    )
    names = [pin.name for pin in lock_pins(Settings(custom_nodes=[mine]))]
    assert names == ["ComfyUI", "ComfyUI-WanAnimatePreprocess"]  # the user's pin wins
    assert "ComfyUI-WanAnimatePreprocess" in [pin.name for pin in lock_pins(Settings())]


@pytest.mark.parametrize(
    ("python", "machine", "expected"),
    [
        (
            (3, 10, 12),
            "x86_64",
            ["async-timeout", "numpy", "opencv-contrib-python", "opencv-python", "triton"],
        ),
        ((3, 11, 2), "x86_64", ["numpy", "opencv-contrib-python", "opencv-python", "triton"]),
        ((3, 13, 0), "x86_64", ["numpy", "opencv-contrib-python", "opencv-python"]),
        ((3, 11, 2), "aarch64", ["numpy", "opencv-contrib-python", "opencv-python"]),
    ],
)
def test_a_pod_installs_the_entries_its_markers_select(python, machine, expected):
    assert [entry.name for entry in for_pod(LOCK_BODY, python, machine)] == expected


def test_each_targets_answer_is_marked_with_its_target():
    answer = (
        "numpy==1.26.4 \\\n    --hash=sha256:03a8\n    # via gguf\n"
        "six==1.17.0 ; sys_platform == 'linux'\n"
    )
    py310, py311 = LOCK_TARGETS[:2]
    lock = marked(answer, py310) + marked(answer, py311)
    assert lock.splitlines()[0] == (
        "numpy==1.26.4 ; python_version == '3.10' and platform_machine == 'x86_64' \\"
    )
    assert "six==1.17.0 ; (sys_platform == 'linux') and python_version == '3.11'" in lock
    assert [(e.name, str(e.marker)) for e in for_pod(lock, (3, 11, 2), "x86_64")] == [
        ("numpy", 'python_version == "3.11" and platform_machine == "x86_64"'),
        (
            "six",
            'sys_platform == "linux" and python_version == "3.11" and platform_machine == "x86_64"',
        ),
    ]
    assert for_pod(lock, (3, 13, 0), "x86_64") == []  # no target of the lock


def test_a_relock_prefers_each_targets_present_versions():
    # What uv gets as its output file's pins: the present lock's versions for that target.
    answer = "numpy==1.26.4 \\\n    --hash=sha256:03a8\n"
    py310, py311 = LOCK_TARGETS[:2]
    lock = marked(answer, py310) + marked(answer.replace("1.26.4", "2.2.6"), py311)
    assert preferences(lock, py310) == "numpy==1.26.4\n"
    assert preferences(lock, py311) == "numpy==2.2.6\n"
    assert preferences("", py311) == ""  # no present lock: nothing preferred


def test_entries_are_the_requirement_lines():
    found = [(e.name, e.version) for e in entries(LOCK_BODY)]
    assert found == [
        ("async-timeout", "5.0.1"),
        ("numpy", "1.26.4"),
        ("opencv-contrib-python", "4.11.0.86"),
        ("opencv-python", "4.11.0.86"),
        ("triton", "3.1.0"),
    ]


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"numpy": "1.26.4", "torch": "2.5.1"}, []),
        ({"NumPy": "1.26.4", "torch": "2.5.1+cu124"}, []),  # names canonical, local labels
        ({"torch": "2.5.1"}, ["numpy missing"]),
        ({"numpy": "2.1.0", "torch": "2.5.1"}, ["numpy 2.1.0 (wanted 1.26.4)"]),
        ({"numpy": "1.26.4", "torch": "2.5.1", "pip": "23.0"}, ["pip 23.0 not in the lock"]),
    ],
)
def test_drift_names_what_differs_from_the_lock(installed, expected):
    assert drift({"numpy": "1.26.4", "torch": "2.5.1"}, installed) == expected


@pytest.mark.parametrize(
    ("installed", "holds_it"),
    [
        ({"numpy": "1.26.4", "torch": "2.5.1"}, True),
        ({"NumPy": "1.26.4", "torch": "2.5.1+cu124", "podforge": "0.1.0"}, True),  # extras aside
        ({"torch": "2.5.1"}, False),
        ({"numpy": "2.1.0", "torch": "2.5.1"}, False),
        ({}, False),
    ],
)
def test_a_venv_holds_the_lock_when_each_locked_version_is_there(installed, holds_it):
    assert holds(installed, {"numpy": "1.26.4", "torch": "2.5.1"}) is holds_it


def test_the_wheels_beside_the_lock_follow_it_in_the_sync_file():
    line = "flash-attn @ file:///w/flash_attn-2.7.4.post1-cp311-cp311-linux_x86_64.whl"
    text = sync_text(LOCK_BODY, [line])
    assert text.startswith(LOCK_BODY) and text.endswith(f"\n{line}\n")


def test_sync_commands_install_exactly_then_put_the_cv2_winner_last():
    installed = {entry.name: entry.version for entry in entries(LOCK_BODY)}
    seeds = seeds_to_remove(installed, ["pip", "numpy", "Wheel"])
    assert seeds == ["pip", "wheel"]  # what sync keeps though no lock names it
    commands = sync_commands("/v", "/workspace/.cache/uv", "/opt/s.txt", installed, seeds)
    sync, pip, wheel, winner, check = commands
    assert "UV_CACHE_DIR=/workspace/.cache/uv /v/bin/uv pip sync --python /v/bin/python" in sync
    assert sync.endswith("--compile-bytecode /opt/s.txt")
    assert pip.endswith("uv pip uninstall --python /v/bin/python pip")
    assert wheel.endswith("uv pip uninstall --python /v/bin/python wheel")
    assert "uv pip uninstall --python /v/bin/python --quiet opencv-contrib-python && " in winner
    assert winner.endswith("--no-deps --compile-bytecode opencv-contrib-python==4.11.0.86")
    assert check.endswith("uv pip check --python /v/bin/python")


CHECKED = "Using Python 3.11.2 environment at: /workspace/venv\nChecked 167 packages in 4ms\n"


@pytest.mark.parametrize(
    ("answer", "status", "passes"),
    [
        ("All installed packages are compatible", 0, True),
        (
            CHECKED + "Found 1 incompatibility\nThe package `mmpose` requires `chumpy`, but it's"
            " not installed",
            1,
            True,
        ),
        (
            CHECKED + "Found 2 incompatibilities\nThe package `mmpose` requires `chumpy`, but"
            " it's not installed\nThe package `mmdet` requires `shapely`, but it's not installed",
            1,
            False,
        ),
        (
            CHECKED + "Found 1 incompatibility\nThe package `mmpose` requires `numpy<2`, but"
            " `2.1.0` is installed",
            1,
            False,
        ),
        ("error: the venv is gone", 2, False),
    ],
)
def test_uvs_check_lets_pass_only_what_the_overrides_dropped(answer, status, passes, tmp_path):
    # uv's check knows no overrides: chumpy, which OpenMMLab's lock drops, is expected
    # missing; anything else it finds still fails the sync.
    import subprocess

    (tmp_path / "answer").write_text(answer + "\n")
    fake_check = f"sh -c 'cat {tmp_path / 'answer'}; exit {status}'"
    command = check_command(fake_check, ["chumpy"])
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert (done.returncode == 0) is passes
    assert done.stdout.strip() == answer  # uv's lines are shown either way
    assert check_command("uv pip check", []) == "uv pip check"
