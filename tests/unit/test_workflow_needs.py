"""podforge/workflows/needs.py on ComfyUI's official templates (PyPI
comfyui-workflow-templates, pinned in the dev dependencies) and on tables."""

from __future__ import annotations

import json
from pathlib import Path

import comfyui_workflow_templates
import pytest

from podforge.core.catalog import CATALOG
from podforge.core.config import load_settings
from podforge.core.pins import DEFAULT_CUSTOM_NODES, FEATURE_NODES, RepoPin
from podforge.workflows.files import with_workflows
from podforge.workflows.needs import (
    WorkflowError,
    conflicts,
    source_of,
    workflow_needs,
)

TEMPLATES = Path(comfyui_workflow_templates.__file__).parent / "templates"
PINS = [*DEFAULT_CUSTOM_NODES, *(node for nodes in FEATURE_NODES.values() for node in nodes)]
COMMIT = "59b027e088c1c8facf7258f6e392d16d204b4d27"


def _templates() -> list[Path]:
    return sorted(p for p in TEMPLATES.glob("*.json") if not p.name.startswith("index"))


def test_every_template_model_resolves_to_a_source_of_its_urls_kind():
    with_models = 0
    for path in _templates():
        workflow = json.loads(path.read_text())
        needs = workflow_needs(path.name, workflow, CATALOG, PINS)
        urls = {
            (model["directory"], model["name"]): model["url"]
            for node in [
                *workflow["nodes"],
                *(
                    n
                    for s in (workflow.get("definitions") or {}).get("subgraphs") or []
                    for n in s.get("nodes", [])
                ),
            ]
            for model in (node.get("properties") or {}).get("models") or []
        }
        with_models += bool(urls)
        assert {(m.folder, m.name) for m in needs.models} == set(urls), path.name
        for model in needs.models:
            assert model.source is not None, (path.name, model.dest)
            url = urls[(model.folder, model.name)]
            kind = "civitai" if "civitai.com" in url else "huggingface"
            assert model.source.kind == kind, (path.name, url)
            if kind == "huggingface":
                assert url.split("?")[0].endswith(f"/{model.source.revision}/{model.source.path}")
    assert with_models >= 100  # 102 of the 172 templates in 0.1.95


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        (
            "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors?download=true",
            {
                "repo": "Comfy-Org/Wan_2.1_ComfyUI_repackaged",
                "revision": "main",
                "path": "split_files/vae/wan_2.1_vae.safetensors",
            },
        ),
        (
            "https://huggingface.co/Comfy-Org/HiDream-I1_ComfyUI/blob/5c0a9f2/split_files/vae/ae.safetensors",
            {
                "repo": "Comfy-Org/HiDream-I1_ComfyUI",
                "revision": "5c0a9f2",
                "path": "split_files/vae/ae.safetensors",
            },
        ),
        (
            "https://civitai.com/api/download/models/128713?type=Model&format=SafeTensor",
            {"civitai": 128713},
        ),
        ("https://civitai.com/models/4384/dreamshaper?modelVersionId=128713", {"civitai": 128713}),
        ("https://example.com/models/4x.pth", {"url": "https://example.com/models/4x.pth"}),
    ],
)
def test_model_urls_name_their_source(url, fields):
    assert source_of(url) == fields


@pytest.mark.parametrize("url", ["ftp://example.com/a", "models/a.safetensors", "https://"])
def test_what_is_no_url_is_refused(url):
    with pytest.raises(ValueError, match="is not an http"):
        source_of(url)


def _node(node_id: int, node_type: str, **properties) -> dict:
    return {"id": node_id, "type": node_type, "properties": properties, "widgets_values": []}


def test_packs_resolve_to_the_pin_then_the_workflows_commit_else_say_what_to_add():
    workflow = {
        "nodes": [
            _node(1, "KSampler", cnr_id="comfy-core", ver="0.3.64"),
            _node(2, "PointsEditor", cnr_id="comfyui-kjnodes", ver="e81f33508b08" + "0" * 28),
            _node(3, "MyNode", aux_id="someone/ComfyUI-Mine", ver=COMMIT),
            _node(4, "Sam2Segmentation", cnr_id="ComfyUI-segment-anything-2", ver="1.0.2"),
            _node(5, "Twice", aux_id="other/Two", ver=COMMIT),
            _node(6, "Twice", aux_id="other/Two", ver="1" * 40),
        ]
    }
    needs = workflow_needs("w.json", workflow, [], PINS)
    pins = {pack.name: pack.pin for pack in needs.packs}
    assert "comfy-core" not in pins
    assert pins["comfyui-kjnodes"] == next(p for p in PINS if p.name == "ComfyUI-KJNodes")
    assert pins["someone/ComfyUI-Mine"] == RepoPin(
        name="ComfyUI-Mine", url="https://github.com/someone/ComfyUI-Mine", commit=COMMIT
    )
    assert needs.unresolved == [
        "w.json: Sam2Segmentation #4 come from the node pack ComfyUI-segment-anything-2, "
        "which is not pinned: add it to custom_nodes as {name, url, commit}",
        "w.json: Twice #5, Twice #6 ask for other/Two at 2 commits (111111111111, "
        "59b027e088c1): pin one in custom_nodes",
    ]


def test_a_model_named_without_a_url_is_matched_in_the_catalog_else_named_with_its_loader():
    catalog_vae = next(entry for entry in CATALOG if entry.dest.startswith("vae/"))
    folder, name = catalog_vae.dest.split("/", 1)
    api_prompt = {
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": name}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mine.ckpt"}},
    }
    needs = workflow_needs("api.json", api_prompt, CATALOG, PINS)
    by_dest = {model.dest: model for model in needs.models}
    assert by_dest[catalog_vae.dest].source.source_id == catalog_vae.source_id
    assert by_dest["checkpoints/mine.ckpt"].source is None
    assert needs.unresolved == [
        "api.json: CheckpointLoaderSimple #4 loads checkpoints/mine.ckpt, which names no "
        "source and matches no catalog or custom_models file: add it to custom_models with "
        "its source"
    ]


@pytest.mark.parametrize(
    ("workflow", "says"),
    [
        ([1, 2], "w.json: not a ComfyUI workflow"),
        ({"version": 0.4}, "w.json: not a ComfyUI workflow"),
        (
            {
                "nodes": [
                    _node(
                        7,
                        "LoraLoader",
                        models=[{"name": "a", "directory": "loras", "url": "civitai:123"}],
                    )
                ]
            },
            "w.json: LoraLoader #7: 'civitai:123' is not an http",
        ),
        (
            {"nodes": [_node(8, "VAELoader", models=[{"name": "a.safetensors"}])]},
            "w.json: VAELoader #8: a model without name or directory",
        ),
    ],
)
def test_bad_input_is_named_in_one_line(workflow, says):
    with pytest.raises(WorkflowError) as raised:
        workflow_needs("w.json", workflow, [], PINS)
    assert str(raised.value).startswith(says) and "\n" not in str(raised.value)


def _loader(url: str) -> dict:
    model = {"name": "ae.safetensors", "directory": "vae", "url": url}
    return {"nodes": [_node(1, "VAELoader", models=[model])]}


def test_two_workflows_asking_one_file_from_two_sources_are_named():
    one = workflow_needs(
        "a.json", _loader("https://huggingface.co/x/y/resolve/main/ae.safetensors"), [], []
    )
    same = workflow_needs(
        "b.json", _loader("https://huggingface.co/x/y/resolve/main/ae.safetensors"), [], []
    )
    other = workflow_needs(
        "c.json", _loader("https://huggingface.co/z/w/resolve/main/ae.safetensors"), [], []
    )
    assert conflicts([one, same]) == []
    assert conflicts([one, other]) == [
        "vae/ae.safetensors: a.json asks for x/y/ae.safetensors, c.json for "
        "z/w/ae.safetensors: give one of them another name"
    ]


def test_workflows_join_the_settings_and_what_the_user_lists_wins(tmp_path):
    (tmp_path / "mine.json").write_text((TEMPLATES / "lora.json").read_text())
    own_lora = {"url": "https://example.com/moxin.safetensors", "dest": "loras/MoXinV1.safetensors"}
    settings = load_settings({"workflows": ["mine.json"], "custom_models": [own_lora]}, {})
    expanded, files = with_workflows(settings, tmp_path)
    assert [file.name for file in files] == ["mine.json"]
    by_dest = {model.dest: model for model in expanded.custom_models}
    assert by_dest["loras/MoXinV1.safetensors"].url == own_lora["url"]  # the user's
    assert by_dest["loras/blindbox_v1_mix.safetensors"].civitai == 32988  # the workflow's
    assert by_dest["checkpoints/dreamshaper_8.safetensors"].civitai == 128713
    assert [n.name for n in expanded.custom_nodes] == [n.name for n in settings.custom_nodes]


def test_a_workflow_pack_joins_the_custom_nodes_and_so_the_lock(tmp_path):
    workflow = {"nodes": [_node(3, "MyNode", aux_id="someone/ComfyUI-Mine", ver=COMMIT)]}
    (tmp_path / "w.json").write_text(json.dumps(workflow))
    settings = load_settings({"workflows": ["w.json"]}, {})
    expanded, _ = with_workflows(settings, tmp_path)
    assert expanded.custom_nodes[-1].name == "ComfyUI-Mine"
    assert f"{expanded.comfyui_dir}/custom_nodes/ComfyUI-Mine" in expanded.checkouts()
    from podforge.core.lock import lock_pins

    assert "ComfyUI-Mine" in {pin.name for pin in lock_pins(expanded)}
