"""What verify reads of a running ComfyUI, on real formats: its log (lines as ComfyUI 0.3.64
wrote them on a sandbox pod), /history entries, and the smoke workflow it queues."""

from __future__ import annotations

import pytest

from podforge.pod.comfyui_checks import (
    SMOKE_PREFIX,
    history_problem,
    node_problems,
    outputs_of,
    smoke_prompt,
)

LOG = "/workspace/logs/comfyui-0.log"
NODES = "/workspace/ComfyUI/custom_nodes"
# A start where gguf was removed from the venv by hand, after an earlier clean start.
BROKEN_START = f"""\
Import times for custom nodes:
   0.0 seconds: {NODES}/ComfyUI-GGUF
   1.1 seconds: {NODES}/ComfyUI-WanVideoWrapper

Starting server

Traceback (most recent call last):
  File "/workspace/ComfyUI/nodes.py", line 2131, in load_custom_node
    module_spec.loader.exec_module(module)
  File "{NODES}/ComfyUI-WanVideoWrapper/gguf/gguf.py", line 4, in <module>
    import gguf
ModuleNotFoundError: No module named 'gguf'

Cannot import {NODES}/ComfyUI-WanVideoWrapper module for custom nodes: No module named 'gguf'
Cannot import {NODES}/ComfyUI-GGUF module for custom nodes: No module named 'gguf'

Import times for custom nodes:
   0.0 seconds (IMPORT FAILED): {NODES}/ComfyUI-GGUF
   0.0 seconds: {NODES}/ComfyUI-KJNodes
   0.1 seconds (IMPORT FAILED): {NODES}/ComfyUI-WanVideoWrapper
   0.5 seconds: {NODES}/comfyui_controlnet_aux

setup plugin alembic.autogenerate.schemas
Starting server
"""
# A node type that imports but cannot describe itself, logged when /object_info is asked.
NO_INFO = """\
[ERROR] An error occurred while retrieving information for the 'ImageConcatMulti' node.
Traceback (most recent call last):
  File "/workspace/ComfyUI/server.py", line 632, in get_object_info
    out[x] = node_info(x)
  File "/workspace/ComfyUI/server.py", line 590, in node_info
    info['input'] = obj_class.INPUT_TYPES()
AttributeError: type object 'ImageConcatMulti' has no attribute 'INPUT_TYPES'
"""


def test_packs_that_failed_to_import_are_named_with_their_cause():
    assert node_problems(BROKEN_START, LOG) == [
        f"ComfyUI-GGUF: IMPORT FAILED: No module named 'gguf' (see {LOG})",
        f"ComfyUI-WanVideoWrapper: IMPORT FAILED: No module named 'gguf' (see {LOG})",
    ]


def test_only_the_last_start_counts():
    # The failed start, then a clean one after the deploy repaired the venv.
    repaired = (
        BROKEN_START + f"Import times for custom nodes:\n   0.0 seconds: {NODES}/ComfyUI-GGUF\n"
    )
    assert node_problems(repaired, LOG) == []
    assert node_problems("", LOG) == []  # no start logged yet


def test_a_node_type_that_cannot_describe_itself_is_named():
    log = BROKEN_START.replace("(IMPORT FAILED)", "") + NO_INFO
    assert node_problems(log, LOG) == [
        "node type ImageConcatMulti is not served: AttributeError: type object"
        f" 'ImageConcatMulti' has no attribute 'INPUT_TYPES' (see {LOG})"
    ]


@pytest.mark.parametrize(
    ("served", "writers"),
    [
        ({"EmptyImage", "SaveImage"}, ["SaveImage"]),
        ({"VHS_VideoCombine"}, ["SaveImage", "VHS_VideoCombine"]),
    ],
)
def test_the_smoke_workflow_needs_no_model_file(served, writers):
    prompt = smoke_prompt(served)
    types = [node["class_type"] for node in prompt.values()]
    assert [t for t in types if t != "EmptyImage"] == writers
    assert all(
        n["inputs"].get("filename_prefix", SMOKE_PREFIX) == SMOKE_PREFIX for n in prompt.values()
    )
    for node in prompt.values():  # every link points at a node of the prompt
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt


# /history/{id} entries as ComfyUI 0.3.64 answered (trimmed).
SUCCESS = {
    "status": {"status_str": "success", "completed": True, "messages": []},
    "outputs": {
        "2": {
            "images": [{"filename": "podforge-smoke_00001_.png", "subfolder": "", "type": "output"}]
        },
        "4": {
            "gifs": [
                {
                    "filename": "podforge-smoke_00001.mp4",
                    "subfolder": "",
                    "type": "output",
                    "format": "video/h264-mp4",
                }
            ]
        },
        "5": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
    },
}
ERROR = {
    "status": {
        "status_str": "error",
        "completed": False,
        "messages": [
            ["execution_start", {"prompt_id": "p"}],
            [
                "execution_error",
                {"node_type": "VHS_VideoCombine", "exception_message": "ffmpeg is required\n"},
            ],
        ],
    },
    "outputs": {},
}


def test_history_success_and_its_files():
    assert history_problem(SUCCESS) is None
    assert outputs_of(SUCCESS) == ["podforge-smoke_00001.mp4", "podforge-smoke_00001_.png"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (ERROR, "VHS_VideoCombine failed: ffmpeg is required"),
        (None, "no history entry"),
        ({"status": {"status_str": "error", "messages": []}}, "status error"),
    ],
)
def test_history_failures_name_the_node(entry, problem):
    assert history_problem(entry) == problem
