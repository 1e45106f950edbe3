"""The workflows a deploy provisions for (setting ``workflows``), read where the deploy is
driven from: a path in the repo or an https:// URL. Their needs (``needs``) join the settings
as ``custom_models`` and ``custom_nodes`` entries, so the plan, the stack lock and the
checkouts treat them as the user's own."""

from __future__ import annotations

import argparse
import functools
import json
import posixpath
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from podforge.core.catalog import CATALOG
from podforge.core.config import Settings
from podforge.core.errors import PodforgeError
from podforge.core.paths import PathError, relative_path
from podforge.core.pins import FEATURE_NODES
from podforge.core.problems import where_and_why
from podforge.core.sources import without_secrets
from podforge.settings import load
from podforge.workflows.graph import WorkflowError
from podforge.workflows.needs import (
    Needs,
    additions,
    as_report,
    conflicts,
    summary_lines,
    workflow_needs,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WorkflowFile:
    name: str  # its file name in ComfyUI's user workflows
    text: str
    needs: Needs


@functools.cache
def read(where: str, base: Path = REPO) -> str:
    """A workflow's text: an https:// URL, or a path (relative ones in the repo)."""
    if where.startswith("https://"):
        try:
            with urllib.request.urlopen(where, timeout=30) as response:
                return response.read().decode()
        except (OSError, ValueError) as error:
            raise WorkflowError(f"{without_secrets(where)}: cannot download it ({error})") from None
    path = Path(where) if Path(where).is_absolute() else base / where
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise WorkflowError(f"{where}: cannot read it ({error})") from None


def workflow_files(settings: Settings, base: Path = REPO) -> list[WorkflowFile]:
    """Each of ``settings.workflows`` with what it needs. WorkflowError: a file that is no
    workflow, a model URL that is none, two files of one name."""
    known = [*CATALOG, *settings.custom_models]
    pins = [*settings.custom_nodes, *(n for nodes in FEATURE_NODES.values() for n in nodes)]
    found: dict[str, WorkflowFile] = {}
    for where in settings.workflows:
        label = without_secrets(where)
        text = read(where, base)
        try:
            workflow = json.loads(text)
        except ValueError as error:
            raise WorkflowError(f"{label}: not JSON ({error})") from None
        name = posixpath.basename(urllib.parse.urlsplit(where).path)
        try:
            relative_path(name)  # it becomes a file in ComfyUI's user dir
        except PathError as error:
            raise WorkflowError(f"{label}: its file name {name!r} is no name: {error}") from None
        if name in found:
            raise WorkflowError(f"{label}: another workflow is named {name} too: rename one")
        found[name] = WorkflowFile(name, text, workflow_needs(label, workflow, known, pins))
    return list(found.values())


def with_workflows(settings: Settings, base: Path = REPO) -> tuple[Settings, list[WorkflowFile]]:
    """The settings with what the workflows need added, and the workflows. WorkflowError
    when something cannot be resolved (every such line, joined) or two files clash."""
    files = workflow_files(settings, base)
    needs = [file.needs for file in files]
    problems = [line for n in needs for line in n.unresolved] + conflicts(needs)
    if problems:
        raise WorkflowError("; ".join(problems))
    models, nodes = additions(needs, settings.custom_models, settings.custom_nodes)
    values = settings.model_dump()
    values["custom_models"] += models
    values["custom_nodes"] += [node.model_dump() for node in nodes]
    try:
        expanded = Settings.model_validate(values)
    except ValidationError as error:
        # A field and why, never the value: it came from a stranger's file and may hold a token.
        field, why = where_and_why(error)
        raise WorkflowError(f"what the workflows add is not accepted: {field}: {why}") from None
    return expanded, files


def main(args: argparse.Namespace) -> int:
    """`podforge workflows plan FILE... [--json]`: what the files need, with the settings'
    pins and models (group_data/all.py and the environment, as a deploy reads them); exit 1
    when something cannot be resolved."""
    try:
        settings = load({"workflows": args.files}, with_group_data=True)
        files = workflow_files(settings, Path.cwd())
    except PodforgeError as error:
        print(f"podforge workflows: {error}", file=sys.stderr)
        return 1
    needs = [file.needs for file in files]
    problems = [line for n in needs for line in n.unresolved] + conflicts(needs)
    if args.json:
        print(json.dumps({"workflows": as_report(needs), "conflicts": conflicts(needs)}, indent=2))
    else:
        print("\n".join(summary_lines(needs)))
        for line in conflicts(needs):
            print(f"CONFLICT {line}")
        models = sum(len(n.models) for n in needs)
        packs = sum(len(n.packs) for n in needs)
        state = f"{len(problems)} to resolve" if problems else "all resolved"
        print(f"workflows: {len(files)} files, {models} model files, {packs} node packs: {state}")
    return 1 if problems else 0
