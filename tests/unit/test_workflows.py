"""podforge/workflows: workflows fitted to a pod and checked against one, on the real
SteadyDancer example that kijai/ComfyUI-WanVideoWrapper ships at the pinned commit
(../shared/upstream/)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from packaging.version import Version

from podforge.core.config import load_settings
from podforge.core.gpu import GpuDevice, GpuReport
from podforge.core.plan import build_plan
from podforge.workflows import checks, fitting, graph
from podforge.workflows.fitting import StackAbilities
from sandbox.repos import upstream_tree

EXAMPLE = (
    upstream_tree("ComfyUI-WanVideoWrapper")
    / "example_workflows"
    / "wanvideo_2_1_14B_SteadyDancer_pose_control_example_01.json"
)


def nodes(workflow: dict) -> list[graph.Node]:
    return graph.read_nodes("the example", workflow)


TORCH25 = StackAbilities(torch=Version("2.5.1"), sageattention=False)
TORCH27_SAGE = StackAbilities(torch=Version("2.7.1"), sageattention=True)


@pytest.fixture(scope="module")
def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def planned_files(variant: str, vram_mib: int = 81_559) -> dict[str, str]:
    settings, plan = h100_plan(variant, vram_mib)
    return fitting.files_by_role(plan.models, settings.models_dir, "steadydancer")


def planned_paths(variant: str) -> set[str]:
    """Every file the plan fetches, relative to the models dir (a pod after its fetch)."""
    settings, plan = h100_plan(variant)
    return {m.dest.removeprefix(settings.models_dir + "/") for m in plan.models}


def h100_plan(variant: str, vram_mib: int = 81_559) -> tuple:
    precision, _, quant = variant.partition(":")
    wanted = {"enable_steadydancer": True, "steadydancer_variant": precision}
    settings = load_settings({**wanted, "steadydancer_gguf_model": quant or "auto"}, {})
    gpu = GpuDevice(
        index=0,
        gpu_index=0,
        name="NVIDIA H100 80GB HBM3",
        vram_mib=vram_mib,
        mig=None,
        uuid="GPU-0",
        driver_version="550.54.15",
        compute_cap="9.0",
    )
    return settings, build_plan(settings, GpuReport(devices=(gpu,)), (3, 11, 2), "x86_64")


def test_the_example_names_its_files_by_kijais_layout(example):
    names = {(r.node_type, r.path) for r in checks.references(nodes(example))}
    assert names == {
        (
            "WanVideoModelLoader",
            "diffusion_models/WanVideo/SteadyDancer/Wan2.1-SteadyDancer_fp8_scaled_KJ.safetensors",
        ),
        ("WanVideoVAELoader", "vae/wanvideo/Wan2_1_VAE_bf16.safetensors"),
        ("WanVideoTextEncodeCached", "text_encoders/umt5-xxl-enc-bf16.safetensors"),
        ("CLIPVisionLoader", "clip_vision/clip_vision_h.safetensors"),
        (
            "WanVideoLoraSelect",
            "loras/WanVideo/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        ),
        ("OnnxDetectionModelLoader", "detection/onnx/vitpose_h_wholebody_model.onnx"),
        ("OnnxDetectionModelLoader", "detection/onnx/yolov10m.onnx"),
    }


@pytest.mark.parametrize(
    ("variant", "diffusion_model"),
    [
        ("fp16", "Wan21_I2V_SteadyDancer_fp16.safetensors"),
        ("fp8", "Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors"),
        (
            "gguf:q6_k",
            "Wan21_I2V_SteadyDancer_fp16-Q6_K_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf",
        ),
    ],
)
def test_fitting_names_the_files_the_plan_fetches(example, variant, diffusion_model):
    files = planned_files(variant)
    fitted, changes = fitting.fit(example, files, TORCH25)
    paths = {r.node_type: r.path for r in checks.references(nodes(fitted))}
    assert paths["WanVideoModelLoader"] == f"diffusion_models/{diffusion_model}"
    assert paths["WanVideoVAELoader"] == "vae/Wan2_1_VAE_bf16.safetensors"
    assert paths["WanVideoLoraSelect"] == (
        "loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    )
    # Every file the fitted workflow loads is one the plan fetches.
    planned = {f"{r.folder}/{files[r.role]}" for r in checks.references(nodes(fitted))}
    assert {r.path for r in checks.references(nodes(fitted))} == planned
    assert any(c.node_type == "WanVideoModelLoader" and c.index == 0 for c in changes)
    # The upstream example is untouched.
    assert checks.references(nodes(example))[0].name != diffusion_model


def loader(workflow: dict) -> list:
    return next(n for n in workflow["nodes"] if n["type"] == "WanVideoModelLoader")[
        "widgets_values"
    ]


def test_torch_25_gets_bf16_and_sdpa_instead_of_fp16_fast_and_sage(example):
    assert loader(example)[1] == "fp16_fast" and loader(example)[4] == "sageattn"
    fitted, _ = fitting.fit(example, planned_files("fp8"), TORCH25)
    assert (loader(fitted)[1], loader(fitted)[4]) == ("bf16", "sdpa")


def test_torch_27_with_sageattention_keeps_them(example):
    fitted, changes = fitting.fit(example, planned_files("fp8"), TORCH27_SAGE)
    assert (loader(fitted)[1], loader(fitted)[4]) == ("fp16_fast", "sageattn")
    assert not [c for c in changes if c.node_type == "WanVideoModelLoader" and c.index in (1, 4)]
    without_sage = StackAbilities(torch=Version("2.7.1"), sageattention=False)
    fitted, _ = fitting.fit(example, planned_files("fp8"), without_sage)
    assert (loader(fitted)[1], loader(fitted)[4]) == ("fp16_fast", "sdpa")


def test_the_unmodified_example_fails_the_check_naming_each_missing_file(example):
    # A fresh pod with every file the plan fetches: the example still names kijai's paths.
    files = planned_files("fp8")
    on_pod = planned_paths("fp8")
    result = checks.check(nodes(example), on_pod, set(graph.node_types(nodes(example))))
    missing = sorted(r.path for r in result.missing_files)
    assert missing == [
        "diffusion_models/WanVideo/SteadyDancer/Wan2.1-SteadyDancer_fp8_scaled_KJ.safetensors",
        "loras/WanVideo/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        "vae/wanvideo/Wan2_1_VAE_bf16.safetensors",
    ]
    fitted, _ = fitting.fit(example, files, TORCH25)
    assert checks.check(nodes(fitted), on_pod, set(graph.node_types(nodes(example)))).ok


def test_node_types_exclude_what_the_frontend_draws(example):
    types = graph.node_types(nodes(example))
    assert "WanVideoAddSteadyDancerEmbeds" in types and "PoseAndFaceDetection" in types
    assert not {"Note", "SetNode", "GetNode", "PrimitiveNode"} & set(types)
    result = checks.check(nodes(example), set(), set(types) - {"PoseAndFaceDetection"})
    assert result.missing_nodes == ["PoseAndFaceDetection"]


def test_node_class_names_are_read_without_running_the_code():
    source = """
from .nodes import Loader
NODE_CLASS_MAPPINGS = {"WanVideoModelLoader": Loader, "WanVideoVAELoader": Loader}
NODE_CLASS_MAPPINGS.update({"WanVideoDecode": Loader})
NODE_CLASS_MAPPINGS["PoseAndFaceDetection"] = Loader
NODE_DISPLAY_NAME_MAPPINGS = {"NotANode": "x"}
"""
    assert checks.node_class_names(source) == {
        "WanVideoModelLoader",
        "WanVideoVAELoader",
        "WanVideoDecode",
        "PoseAndFaceDetection",
    }
    assert checks.node_class_names("def broken(:\n") == set()


def test_node_types_of_config_tables_and_v3_schemas_are_read_too():
    # KJNodes builds its mappings from a NODE_CONFIG table; ComfyUI's V3 nodes name
    # themselves in their schema.
    kjnodes = """
NODE_CONFIG = {
    "ImageResizeKJv2": {"class": ImageResizeKJv2, "name": "Resize Image v2"},
    "GetImageSizeAndCount": {"class": GetImageSizeAndCount},
}
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = generate_node_mappings(NODE_CONFIG)
"""
    v3 = """
class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LoadVideo", display_name="Load Video", inputs=[])
"""
    assert checks.node_class_names(kjnodes) == {"ImageResizeKJv2", "GetImageSizeAndCount"}
    assert checks.node_class_names(v3) == {"LoadVideo"}


def test_steadydancer_brings_the_pose_node_pack():
    names = [
        pin.name for pin in load_settings({"enable_steadydancer": True}, {}).checkouts().values()
    ]
    assert "ComfyUI-WanAnimatePreprocess" in names
    assert "ComfyUI-WanAnimatePreprocess" not in [
        pin.name for pin in load_settings({}, {}).checkouts().values()
    ]


def test_the_check_command_on_a_pod_layout(tmp_path, example, capsys):
    from podforge.cli import main

    comfyui, models = tmp_path / "ComfyUI", tmp_path / "models"
    files = planned_files("fp8")
    fitted, _ = fitting.fit(example, files, TORCH25)
    for ref in checks.references(nodes(fitted)):
        (models / ref.folder / ref.name).parent.mkdir(parents=True, exist_ok=True)
        (models / ref.folder / ref.name).write_bytes(b"weights")
    # One node pack registering every type the workflow uses (read statically, not run).
    pack = comfyui / "custom_nodes" / "AllNodes"
    pack.mkdir(parents=True)
    mappings = ", ".join(f"{t!r}: object" for t in graph.node_types(nodes(example)))
    (pack / "__init__.py").write_text(f"import torch\nNODE_CLASS_MAPPINGS = {{{mappings}}}\n")
    installed = comfyui / "user" / "default" / "workflows" / "steadydancer.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps(fitted))
    argv = ["workflows", "check", "--comfyui-dir", str(comfyui), "--models-dir", str(models)]

    # Every widget's file is there, but the ONNX pose model loads its weights from a
    # sibling file no widget names: checked too.
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and out.count("MISSING") == 1
    assert "MISSING  model detection/onnx/vitpose_h_wholebody_data.bin  (Onnx" in out
    data = models / "detection" / "onnx" / "vitpose_h_wholebody_data.bin"
    data.write_bytes(b"external data")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every workflow has what it loads" in out
    assert "ok       model detection/onnx/vitpose_h_wholebody_data.bin" in out

    vae = models / "vae" / "Wan2_1_VAE_bf16.safetensors"
    vae.unlink()
    data.unlink()
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "MISSING  model vae/Wan2_1_VAE_bf16.safetensors  (WanVideoVAELoader #38)" in out
    assert (
        "MISSING  model detection/onnx/vitpose_h_wholebody_data.bin  (OnnxDetectionModelLoader"
        in out
    )
    assert out.count("MISSING") == 2

    # The upstream example as shipped: its loaders name files no pod has by those names.
    assert main([*argv, str(EXAMPLE)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  model diffusion_models/WanVideo/SteadyDancer/Wan2.1-SteadyDancer_fp8" in out


def test_every_catalog_role_is_a_loader_widget_in_its_folder():
    from podforge.core.catalog import CATALOG

    for entry in CATALOG:
        if entry.role is not None:
            assert entry.role in fitting.ROLE_FOLDERS, entry
            assert entry.dest.startswith(fitting.ROLE_FOLDERS[entry.role] + "/"), entry
    folders = {}
    for widgets in fitting.MODEL_WIDGETS.values():
        for widget in widgets:
            assert folders.setdefault(widget.role, widget.folder) == widget.folder, widget


def steadydancer_plan(comfyui_dir: str, **more: object) -> tuple:
    settings = load_settings(
        {
            "enable_steadydancer": True,
            "comfyui_dir": comfyui_dir,
            "models_dir": f"{comfyui_dir}/models",
            **more,
        },
        {},
    )
    gpu = GpuDevice(
        index=0,
        gpu_index=0,
        name="NVIDIA GeForce RTX 4090",
        vram_mib=24_564,
        mig=None,
        uuid="GPU-0",
        driver_version="550.54.15",
        compute_cap="8.9",
    )
    return settings, build_plan(settings, GpuReport(devices=(gpu,)), (3, 11, 2), "x86_64")


def test_the_install_request_says_where_from_where_to_and_what_the_stack_runs():
    settings, plan = steadydancer_plan("/workspace/ComfyUI")
    request = fitting.install_request(settings, plan)
    assert request["stack"] == {"torch": "2.5.1", "sageattention": False}
    [wanted] = request["workflows"]
    assert wanted["example"] == (
        "/workspace/ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/example_workflows/"
        "wanvideo_2_1_14B_SteadyDancer_pose_control_example_01.json"
    )
    assert wanted["dest"] == (
        "/workspace/ComfyUI/user/default/workflows/podforge-steadydancer.json"
    )
    assert wanted["files"] == fitting.files_by_role(
        plan.models, settings.models_dir, "steadydancer"
    )
    newer, plan28 = steadydancer_plan("/workspace/ComfyUI", stack_profile="torch28-cu128")
    assert fitting.install_request(newer, plan28)["stack"]["torch"] == "2.8.0"
    off = load_settings({}, {})
    assert fitting.install_request(off, plan)["workflows"] == []


def test_each_feature_gets_its_own_files_where_roles_are_shared():
    # WAN 2.2 also plans a diffusion model, text encoder and VAE: SteadyDancer's stay its own.
    settings, plan = steadydancer_plan("/workspace/ComfyUI", enable_wan22=True)
    alone_settings, alone = steadydancer_plan("/workspace/ComfyUI")
    both = fitting.install_request(settings, plan)["workflows"][0]["files"]
    assert both == fitting.install_request(alone_settings, alone)["workflows"][0]["files"]
    assert "SteadyDancer" in both["diffusion_model"]


def test_a_feature_whose_example_node_is_not_listed_is_refused():
    from podforge.core.pins import DEFAULT_CUSTOM_NODES

    nodes = [n for n in DEFAULT_CUSTOM_NODES if n.name != "ComfyUI-WanVideoWrapper"]
    settings, plan = steadydancer_plan("/workspace/ComfyUI", custom_nodes=nodes)
    with pytest.raises(ValueError, match="enable_steadydancer: its workflow comes from "):
        fitting.install_request(settings, plan)


def test_install_fits_on_the_pod_records_a_stamp_and_removes_disabled_ones(tmp_path, capsys):
    from podforge.cli import main
    from podforge.probe.state import digests

    def installed() -> dict:
        """The stamp and the fitted files' digests, judged as the deploy judges them."""
        fitted = digests([fitting.fitted_pattern(settings.comfyui_dir)], [])["files"]
        return fitting.fitted_state(json.loads(stamp.read_text()), fitted)

    settings, plan = steadydancer_plan(str(tmp_path / "ComfyUI"))
    request = fitting.install_request(settings, plan)
    [wanted] = request["workflows"]
    example = tmp_path / wanted["example"]
    example.parent.mkdir(parents=True)
    example.write_bytes(EXAMPLE.read_bytes())
    request_file, stamp = tmp_path / "request.json", tmp_path / "workflows.json"
    request_file.write_text(json.dumps(request))
    argv = ["workflows", "install", "--request", str(request_file), "--stamp", str(stamp)]

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"workflows: {wanted['dest']} fitted from {example.name}" in out
    assert "WanVideoModelLoader #22 [1]: 'fp16_fast' -> 'bf16'" in out
    fitted = json.loads(Path(wanted["dest"]).read_text())
    assert {r.path.split("/", 1)[1] for r in checks.references(nodes(fitted))} == set(
        wanted["files"].values()
    )
    state = installed()
    assert state["files"] == state["current"] and list(state["files"]) == [wanted["dest"]]
    assert state["request"] == hashlib.sha256(request_file.read_bytes()).hexdigest()

    # The feature turned off: its workflow goes, the stamp says none.
    request_file.write_text(json.dumps({**request, "workflows": []}))
    assert main(argv) == 0
    assert f"removed {wanted['dest']}" in capsys.readouterr().out
    assert not Path(wanted["dest"]).exists()
    assert installed()["files"] == {}

    # An example that is not there (the node not checked out): one line naming it.
    example.unlink()
    request_file.write_text(json.dumps(request))
    assert main(argv) == 1
    assert f"workflows: FAILED steadydancer: its upstream example {example}" in (
        capsys.readouterr().out
    )


def test_fitted_workflows_are_named_apart_from_the_users_own():
    with pytest.raises(ValueError, match="mine.json: fitted workflows are named podforge-\\*.json"):
        fitting.FeatureWorkflow(node="n", example="e.json", name="mine.json")
    pattern = fitting.fitted_pattern("/workspace/ComfyUI")
    assert pattern == "/workspace/ComfyUI/user/default/workflows/podforge-*.json"


def test_the_fitted_state_compares_as_written_with_now():
    stamp = {
        "request": "r",
        "files": {"/w/podforge-kept.json": "a", "/w/podforge-edited.json": "b"},
    }
    stamp["files"]["/w/podforge-gone.json"] = "c"
    now = {"/w/podforge-kept.json": {"sha1": "a", "mode": "644"}}
    now["/w/podforge-edited.json"] = {"sha1": "e", "mode": "644"}
    assert fitting.fitted_state(stamp, now) == {
        **stamp,
        "current": {
            "/w/podforge-kept.json": "a",
            "/w/podforge-edited.json": "e",
            "/w/podforge-gone.json": None,
        },
    }
    assert fitting.fitted_state(None, now) is None


def test_an_api_prompt_is_checked_by_the_same_reader():
    prompt = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd\\v1.safetensors"},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }
    result = checks.check(graph.read_nodes("api.json", prompt), set(), {"SaveImage"})
    assert [(r.node_id, r.path) for r in result.missing_files] == [
        ("4", "checkpoints/sd/v1.safetensors")
    ]
    assert result.missing_nodes == ["CheckpointLoaderSimple"]
    with pytest.raises(graph.WorkflowError, match=r"api.json: SaveImage #9: 'inputs'"):
        graph.read_nodes("api.json", {"9": {"class_type": "SaveImage", "inputs": [1]}})
