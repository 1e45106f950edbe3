"""SteadyDancer end to end on a sandbox pod: its pose node pack and detection models, its
workflow fitted to the pod's plan and stack, and the check that the workflow finds every
model file and node type (and names what it does not find)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from e2e.conftest import pod_shell
from podforge.core.config import Settings
from podforge.workflows import checks, fitting
from podforge.workflows.graph import read_nodes
from sandbox.converge import converge_pods

pytestmark = pytest.mark.e2e

DEFAULTS = {name: Settings.model_fields[name].default for name in Settings.model_fields}
COMFYUI = DEFAULTS["comfyui_dir"]
MODELS = DEFAULTS["models_dir"]
PODFORGE = f"{DEFAULTS['podforge_dir']}/tools/bin/podforge"
STAMP = f"{DEFAULTS['podforge_dir']}/workflows.json"
FEATURE = fitting.FEATURE_WORKFLOWS["steadydancer"]
FITTED = f"{COMFYUI}/{fitting.USER_WORKFLOWS}/{FEATURE.name}"
EXAMPLE = f"{COMFYUI}/custom_nodes/{FEATURE.node}/{FEATURE.example}"
FIT_OPERATION = f"Workflows | Fit workflows to this pod ({FEATURE.name})"
CHECK = f"{PODFORGE} workflows check --comfyui-dir {COMFYUI} --models-dir {MODELS}"


def steadydancer_data(sandbox):
    from podforge.core.pins import DEFAULT_CUSTOM_NODES, WAN_ANIMATE_PREPROCESS

    repos = sandbox["git"]["repos"]
    # The sandbox's own git serves every node, the one SteadyDancer brings too.
    nodes = [*DEFAULT_CUSTOM_NODES, WAN_ANIMATE_PREPROCESS]
    pins = [
        {"name": n.name, "url": repos[n.name]["url"], "commit": repos[n.name]["commits"][-1]}
        for n in nodes
    ]
    # WAN 2.2 off: SteadyDancer's workflow alone, and fewer files to fetch.
    return {"enable_steadydancer": True, "enable_wan22": False, "custom_nodes": pins}


@pytest.fixture(scope="module")
def pod(sandbox):
    pod = sandbox["pods"][2]
    yield pod
    # Back to the session's defaults: SteadyDancer off, its workflow gone.
    back = converge_pods({pod["name"]: {}}, workdir=Path(sandbox["base"]))[pod["address"]]
    assert not back.failed, back.errors
    assert pod_shell(sandbox, pod, f"test -e {FITTED}; echo $?") == "1\n"


def deploy(sandbox, pod):
    result = converge_pods(
        {pod["name"]: steadydancer_data(sandbox)}, workdir=Path(sandbox["base"])
    )[pod["address"]]
    assert not result.failed, result.errors
    return result


def check(sandbox, pod, *files: str) -> tuple[int, str]:
    out = pod_shell(sandbox, pod, " ".join([CHECK, *files]), check=False)
    code, _, text = out.partition("\n")
    return int(code.removeprefix("exit=")), text


@pytest.fixture(scope="module")
def deployed(sandbox, pod):
    return deploy(sandbox, pod)


def test_the_fitted_workflow_names_the_files_this_pod_fetched(deployed, sandbox, pod):
    assert FIT_OPERATION in deployed.changed
    plan = json.loads(pod_shell(sandbox, pod, f"cat {DEFAULTS['podforge_dir']}/plan.json"))
    fitted = json.loads(pod_shell(sandbox, pod, f"cat {FITTED}"))
    planned = {m["dest"] for m in plan["models"] if m["feature"] == "steadydancer"}
    loaded = {f"{MODELS}/{ref.path}" for ref in checks.references(read_nodes(FITTED, fitted))}
    # Every file the workflow loads is one this pod's plan fetched (its GPU's variant).
    assert loaded <= planned
    assert len(loaded) == len(checks.references(read_nodes(FITTED, fitted))) == 7
    # The pod's stack decides the loader's widgets: its RTX 5090 runs torch 2.8, which has
    # fp16 accumulation (fp16_fast); no sageattention is installed, so sdpa.
    assert plan["stack"] == "torch28-cu128"
    loader = next(n for n in fitted["nodes"] if n["type"] == "WanVideoModelLoader")
    assert (loader["widgets_values"][1], loader["widgets_values"][4]) == ("fp16_fast", "sdpa")


def test_the_check_passes_with_every_file_and_node_in_place(deployed, sandbox, pod):
    code, out = check(sandbox, pod)
    assert code == 0, out
    assert "MISSING" not in out
    assert f"{FITTED}:" in out and "every workflow has what it loads" in out
    assert "ok       model detection/onnx/vitpose_h_wholebody_model.onnx" in out
    # The pose pack SteadyDancer brings is checked out at its pin (its types are provided).
    pose = sandbox["git"]["repos"]["ComfyUI-WanAnimatePreprocess"]["commits"][-1]
    head = f"git -C {COMFYUI}/custom_nodes/ComfyUI-WanAnimatePreprocess rev-parse HEAD"
    assert pod_shell(sandbox, pod, head).strip() == pose


def test_a_second_deploy_changes_nothing(deployed, sandbox, pod):
    assert deploy(sandbox, pod).changed == []


def test_a_removed_model_file_fails_the_check_naming_it(deployed, sandbox, pod):
    missing = "detection/onnx/yolov10m.onnx"
    pod_shell(sandbox, pod, f"rm {MODELS}/{missing}")
    code, out = check(sandbox, pod)
    assert code == 1
    assert f"MISSING  model {missing}  (OnnxDetectionModelLoader #" in out
    assert out.count("MISSING") == 1
    assert "some workflows would not run" in out
    # verify (the deploy's last step after a change) fails on it too.
    verify = pod_shell(
        sandbox,
        pod,
        f"{PODFORGE} verify --plan {DEFAULTS['podforge_dir']}/plan.json --timeout 5"
        f" --workflows {STAMP} --comfyui-dir {COMFYUI} --models-dir {MODELS}",
        check=False,
    )
    assert verify.startswith("exit=1")
    assert "verify: FAILED workflows: an installed workflow misses a model file" in verify
    # The next deploy fetches it back; the check passes again.
    again = deploy(sandbox, pod)
    assert "Models | Fetch 1 missing model files" in again.changed
    assert check(sandbox, pod)[0] == 0


def test_an_edited_workflow_is_fitted_again(deployed, sandbox, pod):
    pod_shell(sandbox, pod, f"echo '{{}}' > {FITTED}")
    assert FIT_OPERATION in deploy(sandbox, pod).changed
    served = json.loads(pod_shell(sandbox, pod, f"cat {FITTED}"))
    assert checks.references(read_nodes(FITTED, served))


def test_the_upstream_example_as_shipped_misses_its_files(deployed, sandbox, pod):
    # The problem users hit today: on a pod with every file fetched, kijai's names miss.
    code, out = check(sandbox, pod, shlex.quote(EXAMPLE))
    assert code == 1
    for kijai in (
        "diffusion_models/WanVideo/SteadyDancer/Wan2.1-SteadyDancer_fp8_scaled_KJ.safetensors",
        "vae/wanvideo/Wan2_1_VAE_bf16.safetensors",
    ):
        assert f"MISSING  model {kijai}" in out
