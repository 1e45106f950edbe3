"""The environment decisions on real requirement files (shared/upstream) and real pip output."""

from __future__ import annotations

import pytest

from podforge.config import Settings
from podforge.environment import (
    explain_conflict,
    lock_is_installed,
    pin_conflicts,
    requirement_lines,
    shared_import_winners,
    stack_request,
    version_matches,
)
from podforge.gpu import GpuReport
from podforge.pins import DEFAULT_CUSTOM_NODES
from podforge.plan import build_plan
from podforge.stacks import STACK_PROFILES
from sandbox.repos import upstream_dir

UPSTREAM = upstream_dir()
NODES = [node.name for node in DEFAULT_CUSTOM_NODES]


def upstream_sources() -> dict[str, list]:
    return {
        name: requirement_lines((UPSTREAM / name / "requirements.txt").read_text())
        for name in ["ComfyUI", *NODES]
    }


def test_requirement_lines_read_the_real_files():
    sources = upstream_sources()
    comfy = [str(r) for r in sources["ComfyUI"]]
    assert "comfyui-frontend-package==1.27.10" in comfy and "torch" in comfy
    assert not any(line.startswith("#") for line in comfy)
    aux = [str(r) for r in sources["comfyui_controlnet_aux"]]
    assert "trimesh[easy]" in aux and "onnxruntime-gpu" in aux


@pytest.mark.parametrize("profile", sorted(STACK_PROFILES))
def test_the_upstream_nodes_do_not_contradict_either_profiles_pins(profile):
    pins = STACK_PROFILES[profile].pins
    assert pin_conflicts(upstream_sources(), pins, profile) == []


def test_a_node_asking_for_another_torch_is_named_with_both_requirements():
    sources = {**upstream_sources(), "ComfyUI-NeedsNewerTorch": requirement_lines("torch>=2.6\n")}
    (problem,) = pin_conflicts(sources, STACK_PROFILES["torch25-cu124"].pins, "torch25-cu124")
    assert problem.startswith("ComfyUI-NeedsNewerTorch requires torch>=2.6")
    assert "pins torch==2.5.1" in problem


# What pip 26.3 printed here for a node needing opencv-python>=4.12 under numpy<2.
PIP_CONFLICT = """\
ERROR: Cannot install opencv-python>=4.12 because these package versions have conflicting \
dependencies.

The conflict is caused by:
    opencv-python 4.13.0.90 depends on numpy>=2; python_version >= "3.9"
    opencv-python 4.12.0.88 depends on numpy<2.3.0 and >=2; python_version >= "3.9"
    The user requested (constraint) numpy<2

Additionally, some packages in these conflicts have no matching distributions available for \
your environment:
    numpy

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def test_pip_conflict_is_traced_to_the_node_and_the_profile():
    sources = {"ComfyUI": [], "ComfyUI-Fancy": requirement_lines("opencv-python>=4.12\n")}
    message = explain_conflict(PIP_CONFLICT, sources, "torch25-cu124")
    assert "opencv-python 4.12.0.88 (required by ComfyUI-Fancy) depends on numpy<2.3.0" in message
    assert "the stack profile torch25-cu124 constrains numpy<2" in message


def test_a_direct_request_names_its_node():
    output = "The conflict is caused by:\n    The user requested numpy>=2\n\n"
    sources = {"ComfyUI": [], "NodeA": requirement_lines("numpy>=2\n")}
    assert "NodeA requires numpy>=2" in explain_conflict(output, sources, "p")


def test_output_without_the_conflict_section_keeps_pips_last_lines():
    message = explain_conflict("ERROR: No matching distribution found for nope\n", {}, "p")
    assert message.endswith("ERROR: No matching distribution found for nope")


@pytest.mark.parametrize(
    ("resolved", "expected"),
    [
        # What the real nodes resolve to on torch25-cu124 (stack check, 2026-11-22).
        (
            {
                "opencv-python": "4.11.0.86",
                "opencv-python-headless": "4.11.0.86",
                "opencv-contrib-python": "4.11.0.86",
                "onnxruntime-gpu": "1.26.0",
            },
            [("cv2", "opencv-contrib-python", ["opencv-python", "opencv-python-headless"])],
        ),
        ({"opencv-python-headless": "4.11.0.86"}, []),
        (
            {"onnxruntime": "1.26.0", "onnxruntime_gpu": "1.26.0"},
            [("onnxruntime", "onnxruntime-gpu", ["onnxruntime"])],
        ),
        (
            {"opencv-python-headless": "4.11.0.86", "opencv-contrib-python-headless": "4.11.0.86"},
            [("cv2", "opencv-contrib-python-headless", ["opencv-python-headless"])],
        ),
    ],
)
def test_shared_imports_get_one_winner(resolved, expected):
    decisions = shared_import_winners(resolved)
    assert [(d.module, d.winner, d.others) for d in decisions] == expected
    for decision in decisions:
        assert decision.winner in decision.warning() and decision.module in decision.warning()


@pytest.mark.parametrize(
    ("installed", "wanted", "matches"),
    [
        ("2.5.1", "2.5.1", True),
        ("2.5.1+cu124", "2.5.1", True),  # what pip.packages gets wrong (FACTS.md)
        ("2.5.1+sandbox", "2.5.1", True),
        ("2.5.1", "2.5.1+cu124", False),
        ("2.5.0", "2.5.1", False),
        ("1.0", "1.0.0", True),
    ],
)
def test_version_matching(installed, wanted, matches):
    assert version_matches(installed, wanted) is matches


def test_lock_drift_names_missing_and_moved_packages():
    lock = {"torch": "2.5.1", "Pillow": "11.0.0", "numpy": "1.26.4"}
    installed = {"torch": "2.5.1+cu124", "pillow": "11.0.0", "numpy": "2.1.0"}
    assert lock_is_installed(lock, installed) == ["numpy"]
    assert lock_is_installed(lock, {"torch": "2.5.1"}) == ["Pillow", "numpy"]


def test_the_request_key_follows_pins_and_nodes():
    settings = Settings()
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    request = stack_request(settings, plan)
    assert request.flash_attn_wheel and "cp311" in request.flash_attn_wheel
    assert request.sources["ComfyUI"] == "/workspace/ComfyUI/requirements.txt"
    assert request.key() == stack_request(settings, plan).key()
    moved = settings.custom_nodes[0].model_copy(update={"commit": "0" * 40})
    other = Settings(custom_nodes=[moved, *settings.custom_nodes[1:]])
    assert stack_request(other, plan).key() != request.key()
    assert "torch==2.5.1" in request.constraints and "numpy<2" in request.constraints


def test_openmmlab_is_built_into_the_wheelhouse():
    settings = Settings(enable_openmmlab=True)
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    request = stack_request(settings, plan)
    assert request.build_from_source == ["mmcv==2.1.0"]
    assert request.wheelhouse == "/workspace/wheelhouse"
    assert {"mmdet==3.3.0", "mmpose==1.3.2", "mmcv==2.1.0"} <= set(request.extra)
    assert plan.python_stack.needs_nvcc
