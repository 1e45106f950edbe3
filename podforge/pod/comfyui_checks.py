"""Does ComfyUI really serve: every node pack loaded, every workflow's node type known, and a
workflow executed. Run on the pod by `podforge verify` (standard library only).

What a broken node looks like (docs/facts.md#comfyui): a pack whose import
raises is listed ``(IMPORT FAILED)`` in the log's "Import times for custom nodes" block,
after a ``Cannot import <path> module for custom nodes: <cause>`` line; a node type that
imports but cannot describe itself logs ``An error occurred while retrieving information for
the 'X' node`` when /object_info is asked, and is silently absent from it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

IMPORT_TIMES = "Import times for custom nodes:"
_FAILED = re.compile(r"^\s*[\d.]+ seconds \(IMPORT FAILED\): (.+)$")
_CANNOT_IMPORT = re.compile(r"Cannot import (.+) module for custom nodes: (.*)$")
_NO_INFO = re.compile(r"An error occurred while retrieving information for the '(.+)' node")
SMOKE_PREFIX = "podforge-smoke"


def node_problems(log_text: str, log_file: str) -> list[str]:
    """Packs that failed to import and node types that cannot describe themselves, in the
    log of ComfyUI's last start (its last "Import times" block and what follows it)."""
    before, _, last = log_text.rpartition(IMPORT_TIMES)
    if not _:
        return []
    causes = {
        match.group(1): match.group(2)
        for match in map(_CANNOT_IMPORT.search, before.splitlines())
        if match
    }
    problems = []
    lines = last.splitlines()
    for line in lines:
        failed = _FAILED.match(line)
        if failed:
            path = failed.group(1).strip()
            cause = causes.get(path, "no cause logged")
            problems.append(f"{Path(path).name}: IMPORT FAILED: {cause} (see {log_file})")
    for index, line in enumerate(lines):
        no_info = _NO_INFO.search(line)
        if no_info:
            cause = _traceback_cause(lines[index + 1 :])
            problems.append(f"node type {no_info.group(1)} is not served: {cause} (see {log_file})")
    return problems


def _traceback_cause(lines: Iterable[str]) -> str:
    """The exception line ending the traceback that follows (its first line: the cause)."""
    seen = []
    for line in lines:
        if seen and not line.startswith((" ", "Traceback")):
            return line.split("] ", 1)[-1].strip()
        seen.append(line)
    return "no cause logged"


def smoke_prompt(served: Iterable[str]) -> dict[str, Any]:
    """A workflow (API format) that needs no model file: core image nodes and, when its pack
    is installed, VideoHelperSuite's mp4 writer (through imageio-ffmpeg)."""
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": SMOKE_PREFIX},
        },
    }
    if "VHS_VideoCombine" in set(served):
        prompt["3"] = {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 8, "color": 0},
        }
        prompt["4"] = {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["3", 0],
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": SMOKE_PREFIX,
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
            },
        }
    return prompt


def outputs_of(history: Mapping[str, Any]) -> list[str]:
    """Paths (relative to the output dir) of the files a finished prompt wrote."""
    files = []
    for node in history.get("outputs", {}).values():
        for items in node.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("type") == "output" and "filename" in item:
                    files.append(str(Path(item.get("subfolder", ""), item["filename"])))
    return sorted(files)


def history_problem(history: Mapping[str, Any] | None) -> str | None:
    """Why a prompt's /history entry is not a success (None: it is)."""
    if history is None:
        return "no history entry"
    status = history.get("status", {})
    if status.get("status_str") == "success" and status.get("completed"):
        return None
    for kind, detail in status.get("messages", []):
        if kind == "execution_error":
            node = detail.get("node_type", "?")
            return f"{node} failed: {detail.get('exception_message', '?').strip()}"
    return f"status {status.get('status_str', 'unknown')}"


class ComfyClient:
    """ComfyUI's HTTP API at one address, plainly (urllib)."""

    def __init__(self, address: str, port: int, timeout: float = 30.0) -> None:
        self.base = f"http://{address}:{port}"
        self.timeout = timeout

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=self.timeout) as answer:
            return json.load(answer)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            return json.load(answer)

    def run(self, prompt: Mapping[str, Any], timeout: float) -> tuple[str | None, list[str]]:
        """Queue ``prompt``, wait for its /history entry: (problem or None, its outputs)."""
        queued = self.post("/prompt", {"prompt": prompt, "client_id": f"podforge-{uuid.uuid4()}"})
        prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + timeout
        history = None
        # A prompt enters /history once it ran, whatever the outcome.
        while history is None and time.monotonic() < deadline:
            time.sleep(0.2)
            history = self.get(f"/history/{prompt_id}").get(prompt_id)
        return history_problem(history), outputs_of(history or {})
