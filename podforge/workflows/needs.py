"""What a ComfyUI workflow needs to run: the model files its loaders name and the node
packs its nodes come from, each resolved to something podforge can install, pinned and
verified; and what cannot be, by node, with what the user must add.

A workflow says it itself: ComfyUI's loaders carry ``properties.models`` ({name, url,
directory}, with ``hash`` where the author gave one), and every node names its pack
(``properties.cnr_id`` and ``ver``, or ``aux_id``, a GitHub owner/repo). ComfyUI's official
templates are written that way. A model named without a URL is matched by folder and name
against the catalog and ``custom_models``. Pure: the files are read by ``files``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from podforge.core.paths import PathError, relative_path
from podforge.core.pins import RepoPin
from podforge.core.problems import where_and_why
from podforge.core.sources import ModelSource, without_secrets
from podforge.workflows.graph import WorkflowError, quoted, read_nodes

_HF = re.compile(
    r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<revision>[^/]+)/"
    r"(?P<path>[^?#]+)"
)
_CIVITAI_DOWNLOAD = re.compile(r"^https://civitai\.com/api/download/models/(?P<id>\d+)(?:[?#]|$)")
_CIVITAI_PAGE = re.compile(
    r"^https://civitai\.com/models/\d+[^?#]*\?(?:.*&)?modelVersionId=(?P<id>\d+)"
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# ComfyUI's own nodes: nothing to install.
CORE_PACK = "comfy-core"


def source_of(url: str) -> dict[str, Any]:
    """The ModelSource fields a model URL stands for: a Hugging Face file (resolve/ or blob/
    URLs), a CivitAI model version, or the URL itself. ValueError when it is no URL."""
    if found := _HF.match(url):
        return {"repo": found["repo"], "revision": found["revision"], "path": found["path"]}
    if found := _CIVITAI_DOWNLOAD.match(url) or _CIVITAI_PAGE.match(url):
        return {"civitai": int(found["id"])}
    if not re.match(r"^https?://[^/\s]+/\S*$", url):
        raise ValueError(f"{quoted(without_secrets(url))} is not an http(s) URL")
    return {"url": url}


@dataclass(frozen=True)
class ModelNeed:
    folder: str  # ComfyUI's model folder
    name: str  # the file's name there, as the workflow's loader lists it
    nodes: tuple[str, ...]  # "CheckpointLoaderSimple #4" of each node that loads it
    source: ModelSource | None  # None: unresolved

    @property
    def dest(self) -> str:
        return f"{self.folder}/{self.name}"


@dataclass(frozen=True)
class PackNeed:
    name: str  # the pack as the workflow names it (registry id or repo name)
    nodes: tuple[str, ...]
    pin: RepoPin | None  # None: unresolved
    advice: str = ""  # what the user must add, when unresolved


@dataclass(frozen=True)
class Needs:
    workflow: str  # the file, as the user named it
    models: list[ModelNeed] = field(default_factory=list)
    packs: list[PackNeed] = field(default_factory=list)

    @property
    def unresolved(self) -> list[str]:
        """One line per model or pack podforge cannot install, saying what to add."""
        lines = [
            f"{self.workflow}: {', '.join(m.nodes)} loads {m.dest}, which names no source and "
            "matches no catalog or custom_models file: add it to custom_models with its source"
            for m in self.models
            if m.source is None
        ]
        lines += [f"{self.workflow}: {p.advice}" for p in self.packs if p.pin is None]
        return lines


# A registry id (comfyui-kjnodes) or a GitHub owner/repo (kijai/ComfyUI-KJNodes).
_PACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99})?$")


def _pack_key(name: str) -> str:
    return name.lower().replace("_", "-")


def workflow_needs(
    label: str,
    workflow: Any,
    known: Sequence[ModelSource],
    pins: Sequence[RepoPin],
) -> Needs:
    """``known``: catalog and custom_models entries (their ``dest`` relative to the models
    dir), matched by folder and name for models named without a URL; ``pins``: the pinned
    node packs, which win over a workflow's own commit."""
    by_dest = {str(getattr(entry, "dest", "")): entry for entry in known}
    named: dict[str, tuple[str | None, str | None, list[str]]] = {}  # dest -> url, sha, nodes
    packs: dict[str, dict[str, Any]] = {}

    def want(folder: str, name: str, url: str | None, sha256: str | None, node: str) -> None:
        # A stranger's JSON names the place: it stays inside the models dir (paths.py).
        try:
            dest = relative_path(f"{folder}/{name}")
        except PathError as error:
            raise WorkflowError(f"{label}: {node}: a model's directory and name: {error}") from None
        old_url, old_sha, nodes = named.get(dest, (None, None, []))
        named[dest] = (old_url or url, old_sha or sha256, [*nodes, node])

    for node in read_nodes(label, workflow):
        for model in node.models:
            want(model.directory, model.name, model.url, model.sha256, node.label)
        if node.pack is not None and not _PACK.match(node.pack):
            raise WorkflowError(
                f"{label}: {node.label}: the node pack {quoted(node.pack)} is not a registry"
                " id or a GitHub owner/repo"
            )
        if node.pack is not None and node.pack != CORE_PACK:
            entry = packs.setdefault(node.pack, {"vers": set(), "nodes": [], "aux": False})
            entry["aux"] |= node.pack_is_repo
            entry["nodes"].append(node.label)
            if node.version is not None:
                entry["vers"].add(node.version)

    models = []
    for dest, (url, sha256, nodes) in named.items():
        folder, _, name = dest.partition("/")
        source: ModelSource | None = None
        if url:
            try:
                source = ModelSource(**source_of(url), sha256=sha256)
            except ValidationError as error:
                _, why = where_and_why(error)
                raise WorkflowError(
                    f"{label}: {', '.join(nodes)}: the model URL {without_secrets(url)}: {why}"
                ) from None
            except ValueError as error:
                raise WorkflowError(f"{label}: {', '.join(nodes)}: {error}") from None
        elif dest in by_dest:
            entry = by_dest[dest]
            source = ModelSource(**{f: getattr(entry, f) for f in ModelSource.model_fields})
        models.append(ModelNeed(folder, name, tuple(nodes), source))

    pinned = {_pack_key(pin.name): pin for pin in pins}
    needs = []
    for pack, entry in packs.items():
        repo = pack.rsplit("/", 1)[-1]
        nodes = tuple(entry["nodes"])
        commits = sorted(v for v in entry["vers"] if _COMMIT.match(v))
        if _pack_key(repo) in pinned:
            needs.append(PackNeed(pack, nodes, pinned[_pack_key(repo)]))
        elif entry["aux"] and len(commits) == 1:
            url = f"https://github.com/{pack}"
            needs.append(PackNeed(pack, nodes, RepoPin(name=repo, url=url, commit=commits[0])))
        elif entry["aux"] and commits:
            needs.append(
                PackNeed(
                    pack,
                    nodes,
                    None,
                    f"{', '.join(nodes)} ask for {pack} at {len(commits)} commits "
                    f"({', '.join(c[:12] for c in commits)}): pin one in custom_nodes",
                )
            )
        else:
            needs.append(
                PackNeed(
                    pack,
                    nodes,
                    None,
                    f"{', '.join(nodes)} come from the node pack {pack}, which is not pinned: "
                    "add it to custom_nodes as {name, url, commit}",
                )
            )
    return Needs(label, models, needs)


def conflicts(all_needs: Iterable[Needs]) -> list[str]:
    """Model files two workflows ask for from different sources, named."""
    seen: dict[str, tuple[str, ModelSource]] = {}
    found = []
    for needs in all_needs:
        for model in needs.models:
            if model.source is None:
                continue
            if model.dest in seen and seen[model.dest][1].source_id != model.source.source_id:
                first, other = seen[model.dest]
                found.append(
                    f"{model.dest}: {first} asks for {other.label}, {needs.workflow} for "
                    f"{model.source.label}: give one of them another name"
                )
            seen.setdefault(model.dest, (needs.workflow, model.source))
    return found


def additions(
    all_needs: Iterable[Needs], custom_models: Sequence[Any], custom_nodes: Sequence[RepoPin]
) -> tuple[list[dict[str, Any]], list[RepoPin]]:
    """The custom_models entries and custom_nodes pins the workflows add to the settings:
    what the user lists already wins (a model by its dest, a pack by its name)."""
    have_models = {str(m.dest) for m in custom_models}
    have_nodes = {_pack_key(pin.name) for pin in custom_nodes}
    models: dict[str, dict[str, Any]] = {}
    nodes: dict[str, RepoPin] = {}
    for needs in all_needs:
        for model in needs.models:
            if model.source is not None and model.dest not in have_models:
                fields = model.source.model_dump(exclude_defaults=True)
                models.setdefault(model.dest, {**fields, "dest": model.dest})
        for pack in needs.packs:
            if pack.pin is not None and _pack_key(pack.pin.name) not in have_nodes:
                nodes.setdefault(_pack_key(pack.pin.name), pack.pin)
    return list(models.values()), list(nodes.values())


def as_report(all_needs: Iterable[Needs]) -> list[dict[str, Any]]:
    """The needs as plain data (``podforge workflows plan --json``)."""
    return [
        {
            "workflow": needs.workflow,
            "models": [
                {
                    "folder": m.folder,
                    "name": m.name,
                    "nodes": list(m.nodes),
                    "source": None
                    if m.source is None
                    else {"kind": m.source.kind, **m.source.model_dump(exclude_defaults=True)},
                }
                for m in needs.models
            ],
            "packs": [
                {
                    "name": p.name,
                    "nodes": list(p.nodes),
                    "pin": None if p.pin is None else p.pin.model_dump(),
                }
                for p in needs.packs
            ],
            "unresolved": needs.unresolved,
        }
        for needs in all_needs
    ]


def summary_lines(all_needs: Iterable[Needs]) -> list[str]:
    """What ``podforge workflows plan`` prints for people."""
    lines = []
    for needs in all_needs:
        lines.append(f"{needs.workflow}:")
        for m in needs.models:
            where = m.source.label if m.source else "UNRESOLVED"
            lines.append(f"  model  {m.dest}  <- {where}")
        for p in needs.packs:
            where = f"{p.pin.url} @ {p.pin.commit[:12]}" if p.pin else "UNRESOLVED"
            lines.append(f"  nodes  {p.name}  <- {where}")
        lines += [f"  UNRESOLVED {line.split(': ', 1)[1]}" for line in needs.unresolved]
    return lines
