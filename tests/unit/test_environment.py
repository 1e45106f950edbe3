"""The environment decisions on real requirement files (shared/upstream) and real uv output."""

from __future__ import annotations

import pytest

from podforge.core.environment import (
    explain_uv_conflict,
    pin_conflicts,
    requirement_lines,
    shared_import_winners,
    version_matches,
)
from podforge.core.lock import lock_inputs
from podforge.core.pins import DEFAULT_CUSTOM_NODES
from podforge.core.stacks import STACK_PROFILES
from sandbox.repos import upstream_tree

NODES = [node.name for node in DEFAULT_CUSTOM_NODES]


def upstream_sources() -> dict[str, list]:
    return {
        name: requirement_lines((upstream_tree(name) / "requirements.txt").read_text())
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


# What uv 0.13.9 printed here for a node needing opencv-python>=4.12 under the profile.
UV_CONFLICT = """\
warning: The requested Python version 3.10 is not available; 3.11.7 will be used to build \
dependencies instead.
error: No solution found when resolving dependencies
  cause: Because you require opencv-python>=4.12 and opencv-python<4.12, we can conclude \
that your requirements are unsatisfiable.
"""


def test_a_uv_conflict_is_traced_to_the_node_and_the_profile():
    sources = {"ComfyUI": [], "ComfyUI-Fancy": requirement_lines("opencv-python>=4.12\n")}
    inputs = lock_inputs(STACK_PROFILES["torch25-cu124"], {"ComfyUI": "", "ComfyUI-Fancy": ""})
    message = explain_uv_conflict(UV_CONFLICT, sources, inputs.profile, inputs.constraints)
    assert message.startswith("the environment does not resolve: error: No solution found")
    assert "ComfyUI-Fancy requires opencv-python>=4.12" in message
    assert "the stack profile torch25-cu124 constrains opencv-python<4.12" in message
    assert "warning" not in message


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
        ("2.5.1+cu124", "2.5.1", True),  # what pip.packages gets wrong (docs/facts.md#python-stack)
        ("2.5.1+sandbox", "2.5.1", True),
        ("2.5.1", "2.5.1+cu124", False),
        ("2.5.0", "2.5.1", False),
        ("1.0", "1.0.0", True),
    ],
)
def test_version_matching(installed, wanted, matches):
    assert version_matches(installed, wanted) is matches
