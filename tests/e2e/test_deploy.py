"""converge -> idempotence -> verify, on real sshd pods; then a pod whose SSH is down."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest

from e2e.conftest import pod_shell
from sandbox.converge import converge, converge_pods

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def first_run(sandbox):
    return converge()


def test_fresh_pods_converge(first_run, sandbox):
    assert set(first_run) == {pod["address"] for pod in sandbox["pods"]}
    for result in first_run.values():
        assert not result.failed and result.errors == []
        assert result.changed, f"{result.name}: a fresh pod must need changes"


def test_a_fresh_deploy_keeps_its_timeline_on_each_pod(first_run, sandbox):
    for pod in sandbox["pods"]:
        timeline = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/timeline.json"))
        steps = {step["name"]: step for step in timeline["steps"]}
        # The bytes first: right after the tools' venv the stack's sync starts, then the
        # models' fetch, both in the background while ComfyUI and its nodes are cloned; both
        # are awaited before verify.
        order = [
            name
            for name in steps
            if name in ("Pod tools", "Models", "Python environment", "ComfyUI")
        ]
        assert order == ["Pod tools", "Python environment", "Models", "ComfyUI"], list(steps)
        assert steps["Models"]["end"] <= steps["Verify"]["start"] + 0.01
        assert steps["ComfyUI"]["end"] <= steps["Python environment"]["end"]
        shared = {tuple(overlap["steps"]) for overlap in timeline["overlaps"]}
        assert {
            ("Python environment", "Models"),
            ("Python environment", "ComfyUI"),
            ("Models", "ComfyUI"),
        } <= shared, shared
        # The Models step's bytes are what the fetcher brought: every planned file, as the
        # hub serves it (small stand-ins), in the seconds the fetch itself took.
        manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
        sizes = pod_shell(sandbox, pod, "stat -c %s " + " ".join(m["dest"] for m in manifest))
        assert steps["Models"]["bytes"] == sum(int(size) for size in sizes.split())
        assert 0 < steps["Models"]["transfer_seconds"] <= steps["Models"]["seconds"]
        assert timeline["bytes_only_seconds"] == pytest.approx(
            steps["Models"]["transfer_seconds"], abs=0.02
        )
        ratio = timeline["seconds"] / timeline["bytes_only_seconds"]
        assert timeline["ratio"] == pytest.approx(ratio, rel=0.02)
        print(pod["name"], json.dumps(timeline))


def _hub_gets(sandbox):
    log = json.load(urllib.request.urlopen(sandbox["hub"]["url"] + "/_control/log"))
    return [entry for entry in log if entry["method"] == "GET"]


def test_models_are_in_place_byte_exact(first_run, sandbox):
    for pod in sandbox["pods"]:
        manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
        assert manifest
        sums = pod_shell(sandbox, pod, "sha256sum " + " ".join(m["dest"] for m in manifest))
        got = {line.split()[1]: line.split()[0] for line in sums.splitlines()}
        for model in manifest:
            url = f"{sandbox['hub']['url']}/{model['repo']}/resolve/main/{model['path']}"
            head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
            assert got[model["dest"]] == head.headers["X-Linked-Etag"].strip('"')
    # The sandbox hub offers Xet like huggingface.co: the pods' fetchers took it via hf_xet.
    paths = [entry["path"] for entry in _hub_gets(sandbox)]
    assert any("/cas/v1/reconstructions/" in path for path in paths)
    assert not any("/resolve/" in path for path in paths), "a model body came over plain HTTP"


def test_second_run_changes_nothing(first_run, sandbox):
    before = len(_hub_gets(sandbox))
    timelines = {
        p["name"]: pod_shell(sandbox, p, "cat /opt/podforge/timeline.json") for p in sandbox["pods"]
    }
    second = converge()
    assert len(_hub_gets(sandbox)) == before, "the second run downloaded model files"
    # A no-op keeps the last deploy's timeline.
    assert timelines == {
        p["name"]: pod_shell(sandbox, p, "cat /opt/podforge/timeline.json") for p in sandbox["pods"]
    }
    for result in second.values():
        assert not result.failed and result.errors == []
        assert result.changed == [], f"{result.name} changed on the second run"
        assert result.unchanged


def test_pods_hold_their_plan_and_tools(first_run, sandbox):
    for pod in sandbox["pods"]:
        plan = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
        live = json.loads(pod_shell(sandbox, pod, "/opt/podforge/tools/bin/podforge plan"))
        assert live["gpus"] == plan["gpus"]
        assert pod_shell(sandbox, pod, "cat /proc/1/comm").strip() == "tini"
        section = pod_shell(sandbox, pod, "cat /etc/supervisor/conf.d/podforge-comfyui-0.conf")
        assert f"main.py {' '.join(plan['comfyui'][0]['args'])}\n" in section
        manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
        assert sorted(m["dest"] for m in manifest) == sorted(m["dest"] for m in plan["models"])


def test_different_gpus_get_different_plans(first_run, sandbox):
    plans = {
        pod["gpu"]: json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
        for pod in sandbox["pods"]
    }
    small, big = plans["rtx-4080-super"], plans["h100"]
    assert (small["tier"], big["tier"]) == ("consumer", "datacenter")
    memory = (small["comfyui"][0]["memory_mode"], big["comfyui"][0]["memory_mode"])
    assert memory == ("sequential_cpu_offload", "full")
    # No GPU here: the sandbox's --cpu replaces the table's VRAM flags (unit tests parse
    # every flag set the table gives with ComfyUI's own parser).
    assert small["comfyui"][0]["args"][0] == big["comfyui"][0]["args"][0] == "--cpu"
    assert (small["variants"]["wan22"]["precision"], big["variants"]["wan22"]["precision"]) == (
        "gguf",
        "fp8",
    )
    assert {m["dest"] for m in small["models"]} != {m["dest"] for m in big["models"]}


def test_the_fetch_reports_each_file_it_fetched(first_run, sandbox, capfd):
    extra = {"repo": "yzd-v/DWPose", "path": "yolox_l.onnx", "dest": "custom/yolox-copy.onnx"}
    results = converge(data={"custom_models": [extra]})
    for result in results.values():
        assert not result.failed
        assert "Models | Fetch 1 missing model files" in result.changed
    lines = capfd.readouterr().err.splitlines()
    fetched = [line for line in lines if "fetched /workspace/ComfyUI/models/custom/" in line]
    assert len(fetched) == len(sandbox["pods"])
    assert all(
        line.endswith("fetched /workspace/ComfyUI/models/custom/yolox-copy.onnx")
        for line in fetched
    )


def test_a_civitai_lora_and_a_url_model_are_fetched_once_and_the_token_stays_private(
    first_run, sandbox, capfd, caplog
):
    token = sandbox["hub"]["civitai_token"]
    models = [
        {"civitai": 1001, "dest": "loras/sandbox_style_lora.safetensors"},
        {"url": f"{sandbox['hub']['url']}/files/sandbox_upscaler.pth", "dest": "upscale/x.pth"},
    ]
    results = converge(data={"custom_models": models})
    for result in results.values():
        assert not result.failed
        assert "Models | Fetch 2 missing model files" in result.changed
    again = converge(data={"custom_models": models})
    assert all(not r.failed and not r.changed for r in again.values())
    for pod in sandbox["pods"]:
        stamp = pod_shell(
            sandbox,
            pod,
            "cat /workspace/ComfyUI/models/loras/.podforge-verified/"
            "sandbox_style_lora.safetensors.json",
        )
        assert '"source": "civitai:1001:"' in stamp
        path = "/opt/podforge/secrets/civitai_token"
        assert pod_shell(sandbox, pod, f"stat -c '%a' {path}") == "600\n"
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err + caplog.text
    assert "has no sha256: checked by size only" in caplog.text  # the plan's warning
    assert all(not r.failed for r in converge().values())


def test_a_failed_fetch_names_the_file_and_fails_the_pod(first_run, sandbox, capfd):
    missing = {"repo": "yzd-v/DWPose", "path": "no-such-file.onnx", "dest": "custom/none.onnx"}
    results = converge(data={"custom_models": [missing]})
    for result in results.values():
        assert result.failed
        # The fetch failed; the operations after it never ran.
        assert result.errors == ["Models | Fetch 1 missing model files"]
        assert result.not_run and result.not_run[-1].startswith("Timeline")
    err = capfd.readouterr().err
    assert "FAILED /workspace/ComfyUI/models/custom/none.onnx: HTTP 404 from the hub" in err
    assert "Traceback" not in err
    # Back to the plain recipe, so the pods are as the tests after this one expect.
    assert all(not r.failed for r in converge().values())


def test_the_hf_token_lands_private_and_is_never_printed(first_run, sandbox, capfd):
    secret = "hf_e2e_secret_token_value"
    pod = sandbox["pods"][0]  # a token restarts ComfyUI (its environment): one pod shows it
    workdir = Path(sandbox["base"])
    result = converge_pods({pod["name"]: {"hf_token": secret}}, workdir=workdir)
    assert not result[pod["address"]].failed
    secrets = "/opt/podforge/secrets"
    modes = pod_shell(sandbox, pod, f"stat -c '%a %U' {secrets} {secrets}/hf_token")
    assert modes.split() == ["700", "root", "600", "root"]
    assert pod_shell(sandbox, pod, f"cat {secrets}/hf_token") == secret
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    # Back to the plain recipe (no token), so the pod is as the tests after this one expect.
    assert not converge_pods({pod["name"]: {}}, workdir=workdir)[pod["address"]].failed


def test_a_pod_with_ssh_down_fails_alone(first_run, sandbox, caplog):
    from sandbox import control

    victim = sandbox["pods"][-1]
    control.stop_one_pod(victim["name"])
    try:
        results = converge()
        assert results[victim["address"]].failed
        others = [r for name, r in results.items() if name != victim["address"]]
        assert others and all(not r.failed and r.errors == [] for r in others)
        assert all(r.changed == [] for r in others), [(r.name, r.changed) for r in others]
    finally:
        control.restart_pod(victim["name"])
    # Rebooted on its own files: the pod is as the deploy left it, but for its services
    # (a reboot stops supervisord; the deploy starts it again and verifies).
    caplog.set_level(logging.INFO)
    rebooted = converge()[victim["address"]]
    assert not rebooted.failed
    assert len(rebooted.changed) == 3, rebooted.changed
    assert "Services | Start supervisord" in rebooted.changed[0]
    assert rebooted.changed[1].startswith("Verify")
    assert rebooted.changed[2].startswith("Timeline")
    # Printed at the end of the deploy, under the pod's prefix.
    printed = [r.getMessage() for r in caplog.records if "timeline: " in r.getMessage()]
    assert len(printed) == 1 and victim["address"] in printed[0], printed
    assert "bytes alone: nothing was downloaded" in caplog.text
