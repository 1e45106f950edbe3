"""ComfyUI, its nodes and the committed stack lock on real sshd pods.

converge -> every checkout at its pin, the venv exactly the lock (real torch from PyPI), one
cv2; then a moved pin, a venv changed by hand, a node the lock does not cover (a stale lock),
and a node with local changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from pathlib import Path

import pytest

from e2e.conftest import pod_shell
from sandbox.converge import converge, converge_pods
from sandbox.repos import BROKEN_CAUSE, BROKEN_PACK, CONFLICTING_NODE
from sandbox.settings import SANDBOX_NODES

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

VENV = "/workspace/venv"
TOOLS = "/opt/podforge/tools"  # the pod tools' own venv (locks/tools.txt)
VERIFY_OP = "Verify: ComfyUI serves every node and runs a workflow, r2sync works"
NODES = "/workspace/ComfyUI/custom_nodes"


@pytest.fixture(scope="module")
def deployed(sandbox):
    results = converge()
    assert all(not r.failed for r in results.values())
    return results


def pinned(sandbox, name, index=-1):
    repo = sandbox["git"]["repos"][name]
    return {"name": name, "url": repo["url"], "commit": repo["commits"][index]}


def node_pins(sandbox, **moved):
    return [moved.get(node.name) or pinned(sandbox, node.name) for node in SANDBOX_NODES]


def pod_python(sandbox, pod, program, venv=VENV):
    return pod_shell(sandbox, pod, f"{venv}/bin/python -c {shlex.quote(program)}")


def head(sandbox, pod, path):
    return pod_shell(sandbox, pod, f"git -C {path} rev-parse HEAD").strip()


def test_comfyui_and_every_node_are_at_their_pins(deployed, sandbox):
    for pod in sandbox["pods"]:
        assert head(sandbox, pod, "/workspace/ComfyUI") == pinned(sandbox, "ComfyUI")["commit"]
        for node in SANDBOX_NODES:
            expected = pinned(sandbox, node.name)["commit"]
            assert head(sandbox, pod, f"{NODES}/{node.name}") == expected
        # A shallow fetch of exactly the pin: one commit in the history.
        assert pod_shell(sandbox, pod, "git -C /workspace/ComfyUI rev-list --count HEAD") == "1\n"


def distributions(sandbox, pod, venv=VENV):
    """name -> version of every distribution in a venv of the pod, as Python itself sees them."""
    return json.loads(
        pod_python(
            sandbox,
            pod,
            "import json, re, importlib.metadata as m\n"
            "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): "
            "d.version for d in m.distributions()}))",
            venv,
        )
    )


def locked_for(profile, pod_python_version):
    from podforge.core.lock import for_pod, lock_file

    text = (REPO / lock_file(profile)).read_text()
    return {entry.name: entry.version for entry in for_pod(text, pod_python_version, "x86_64")}


def test_the_venv_holds_exactly_the_lock_of_its_gpus_stack(deployed, sandbox):
    stacks = {}
    for pod in sandbox["pods"]:
        stack = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))["stack"]
        stacks[pod["gpu"]] = stack
        version = pod_python(sandbox, pod, "import sys; print(*sys.version_info[:3])")
        locked = locked_for(stack, tuple(int(part) for part in version.split()))
        installed = distributions(sandbox, pod)
        # Every locked distribution at its version, and nothing else but flash-attn: the pod
        # tools (podforge, uv, boto3) live in their own venv.
        assert {name: installed.get(name) for name in locked} == locked
        assert sorted(set(installed) - set(locked)) == ["flash-attn"]
        check = pod_shell(sandbox, pod, f"{TOOLS}/bin/uv pip check --python {VENV}/bin/python 2>&1")
        assert "All installed packages are compatible" in check
    assert stacks == {
        "rtx-4080-super": "torch25-cu124",
        "h100": "torch25-cu124",
        "rtx-5090": "torch28-cu128",  # Blackwell (sm_120): torch 2.5.1 has no kernels for it
    }


def test_the_tools_run_from_their_own_venv_holding_exactly_the_tools_lock(deployed, sandbox):
    for pod in sandbox["pods"]:
        version = pod_python(sandbox, pod, "import sys; print(*sys.version_info[:3])", TOOLS)
        locked = locked_for("tools", tuple(int(part) for part in version.split()))
        installed = distributions(sandbox, pod, TOOLS)
        assert {name: installed.get(name) for name in locked} == locked
        assert sorted(set(installed) - set(locked)) == ["podforge"]
        assert "torch" not in installed  # ComfyUI's stack stays in its own venv
        units = pod_shell(sandbox, pod, "cat /etc/supervisor/conf.d/podforge-r2sync.conf")
        assert f"{TOOLS}/bin/podforge r2sync " in units


def test_a_blackwell_pod_runs_torch_28_built_for_it(deployed, sandbox):
    pod = next(p for p in sandbox["pods"] if p["gpu"] == "rtx-5090")
    # The wheel's own arch list (torch.cuda.get_arch_list() is empty without a GPU).
    built = pod_python(
        sandbox,
        pod,
        "import torch; print(torch.__version__, torch.version.cuda, torch._C._cuda_getArchFlags())",
    ).split()
    assert built[:2] == ["2.8.0+cu128", "12.8"]
    assert "sm_120" in built[2:] and "sm_100" in built[2:]
    installed = distributions(sandbox, pod)
    assert installed["xformers"] == "0.0.32.post2" and installed["transformers"].startswith("5.")
    # Its ComfyUI runs --cpu here (no GPU): verify says the GPU check was skipped.
    out = verify_on(sandbox, pod, "--venv-wanted /opt/podforge/stack-venv.json")
    assert out.startswith("exit=0\n"), out
    assert "verify: the GPU check is skipped for comfyui-0: ComfyUI runs --cpu" in out


def test_a_venv_changed_by_hand_is_synced_back(deployed, sandbox):
    pod = sandbox["pods"][1]
    uv = f"{TOOLS}/bin/uv pip --quiet"
    pod_shell(sandbox, pod, f"{uv} uninstall --python {VENV}/bin/python einops")
    pod_shell(sandbox, pod, f"{VENV}/bin/python -m ensurepip")  # pip is not in the lock
    # ComfyUI still runs on what it imported: verify names the difference before a restart.
    out = verify_on(sandbox, pod, "--venv-wanted /opt/podforge/stack-venv.json")
    assert out.startswith("exit=1\n"), out
    assert (
        "verify: FAILED the venv differs from its lock (2: einops missing, pip 23.0.1 not in"
        " the lock): deploy again, which syncs it back"
    ) in out
    result = converge()[pod["address"]]
    assert not result.failed
    (synced,) = [op for op in result.changed if op.startswith("Python environment | Install ")]
    assert "einops missing" in synced and "pip 23.0.1 not in the lock" in synced
    installed = distributions(sandbox, pod)
    assert "einops" in installed and "pip" not in installed
    assert converge()[pod["address"]].changed == []


def test_the_winning_opencv_build_is_the_cv2_on_disk(deployed, sandbox):
    # cv2's native module must be byte-for-byte the one opencv-contrib-python's RECORD lists.
    program = (
        "import base64, hashlib, importlib.metadata as m\n"
        "f = next(f for f in m.files('opencv-contrib-python') "
        "if f.name.startswith('cv2.') and f.name.endswith('.so'))\n"
        "got = base64.urlsafe_b64encode(hashlib.sha256(f.read_binary()).digest()).rstrip(b'=')\n"
        "print(f.hash.value == got.decode())\n"
    )
    pod = sandbox["pods"][0]
    assert pod_shell(sandbox, pod, f'{VENV}/bin/python -c "{program}"') == "True\n"


def test_comfyui_rejects_a_flag_it_does_not_have(deployed, sandbox):
    pod = sandbox["pods"][0]
    rejected = pod_shell(
        sandbox, pod, f"cd /workspace/ComfyUI && {VENV}/bin/python main.py --medvram; echo $?"
    )
    assert rejected.splitlines()[-1] == "2"  # argparse: ComfyUI has no --medvram


def verify_on(sandbox, pod, *flags):
    return pod_shell(
        sandbox,
        pod,
        f"{TOOLS}/bin/podforge verify --venv {VENV} --comfyui-dir /workspace/ComfyUI"
        " --timeout 120 " + " ".join(flags),
        check=False,
    )


def test_every_pack_loads_and_a_workflow_runs(deployed, sandbox):
    # The real ComfyUI and nodes on PyPI's torch (CPU): no pack failed, a workflow ran.
    videos = {}
    for pod in sandbox["pods"]:
        out = verify_on(sandbox, pod, "--smoke")
        assert out.startswith("exit=0\n"), out
        served = int(re.search(r"comfyui-0 serves (\d+) node types", out).group(1))
        assert served > 900  # 952 with the six nodes, as a real start here showed
        video = re.search(r"ran the smoke workflow in [\d.]+ s: .*(podforge-smoke_\d+\.mp4)", out)
        assert video, out
        sha = pod_shell(sandbox, pod, f"sha256sum /workspace/ComfyUI/output/{video.group(1)}")
        videos[pod["name"]] = (video.group(1), sha.split()[0])
    # With R2 sync on, each pod's video reaches the bucket under its own key, byte-exact
    # (rclone keeps objects as files): ComfyUI numbers files per pod, so the names are
    # podforge-smoke_0000N_.mp4 on every pod, and none overwrote another's.
    bucket = Path(sandbox["s3"]["dir"]) / sandbox["s3"]["bucket"]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    wanted = {bucket / "outputs" / pod / day / name: sha for pod, (name, sha) in videos.items()}
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in wanted) and time.monotonic() < deadline:
        time.sleep(0.5)
    for path, sha in wanted.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path


def test_a_pack_whose_import_raises_fails_verify_naming_it(deployed, sandbox, caplog):
    pod = sandbox["pods"][2]
    broken = {
        **pinned(sandbox, BROKEN_PACK),
        "commit": sandbox["git"]["repos"][BROKEN_PACK]["broken"],
    }
    result = converge_pods(
        {pod["name"]: {"custom_nodes": node_pins(sandbox, **{BROKEN_PACK: broken})}},
        workdir=_workdir(sandbox),
    )[pod["address"]]
    # Its requirements did not change: the lock covers the new pin, ComfyUI restarts on it.
    assert result.failed and result.errors == [VERIFY_OP]
    assert "Services | supervisorctl update (comfyui-0)" in result.changed
    assert (
        f"verify: FAILED {BROKEN_PACK}: IMPORT FAILED: {BROKEN_CAUSE}"
        " (see /workspace/logs/comfyui-0.log)"
    ) in caplog.text
    assert not converge()[pod["address"]].failed


def test_a_dependency_removed_by_hand_is_named_then_repaired(deployed, sandbox):
    pod = sandbox["pods"][0]
    uv = f"{TOOLS}/bin/uv pip --quiet"
    pod_shell(sandbox, pod, f"{uv} uninstall --python {VENV}/bin/python gguf")
    pod_shell(sandbox, pod, "supervisorctl restart comfyui-0")
    out = verify_on(sandbox, pod)
    assert out.startswith("exit=1\n")
    for pack in ("ComfyUI-GGUF", "ComfyUI-WanVideoWrapper"):
        assert f"verify: FAILED {pack}: IMPORT FAILED: No module named 'gguf'" in out
    result = converge()[pod["address"]]
    assert not result.failed
    (synced,) = [op for op in result.changed if op.startswith("Python environment | Install ")]
    assert "gguf missing" in synced
    assert "Services | Restart comfyui-0 (the venv was synced)" in result.changed
    assert verify_on(sandbox, pod).startswith("exit=0\n")


def test_a_moved_pin_is_applied_on_the_next_run(deployed, sandbox):
    pod = sandbox["pods"][0]
    older = pinned(sandbox, "ComfyUI-GGUF", 0)
    moved = converge_pods(
        {pod["name"]: {"custom_nodes": node_pins(sandbox, **{"ComfyUI-GGUF": older})}},
        workdir=_workdir(sandbox),
    )[pod["address"]]
    assert not moved.failed
    assert f"ComfyUI | ComfyUI-GGUF at {older['commit'][:12]}" in moved.changed
    assert head(sandbox, pod, f"{NODES}/ComfyUI-GGUF") == older["commit"]
    again = converge_pods(
        {pod["name"]: {"custom_nodes": node_pins(sandbox, **{"ComfyUI-GGUF": older})}},
        workdir=_workdir(sandbox),
    )[pod["address"]]
    assert again.changed == []
    back = converge()[pod["address"]]
    assert not back.failed
    assert head(sandbox, pod, f"{NODES}/ComfyUI-GGUF") == pinned(sandbox, "ComfyUI-GGUF")["commit"]


def test_a_node_the_lock_does_not_cover_stops_its_pod_before_any_change(deployed, sandbox, caplog):
    victim, other = sandbox["pods"][0], sandbox["pods"][1]
    before = distributions(sandbox, victim)
    checkouts = pod_shell(sandbox, victim, f"ls {NODES}")
    nodes = [*node_pins(sandbox), pinned(sandbox, CONFLICTING_NODE)]
    results = converge_pods(
        {victim["name"]: {"custom_nodes": nodes}, other["name"]: {}}, workdir=_workdir(sandbox)
    )
    assert results[victim["address"]].failed
    assert results[victim["address"]].changed == []
    assert not results[other["address"]].failed and results[other["address"]].changed == []
    assert (
        f"preflight refused: the stack lock locks/torch25-cu124.txt is stale ({CONFLICTING_NODE}"
        " is new): run `podforge stack lock --profile torch25-cu124` and commit it"
    ) in caplog.text
    assert distributions(sandbox, victim) == before
    assert pod_shell(sandbox, victim, f"ls {NODES}") == checkouts


def test_a_node_with_local_changes_is_reported_and_left_alone(deployed, sandbox, caplog):
    pod = sandbox["pods"][2]
    path = f"{NODES}/ComfyUI-KJNodes"
    pod_shell(sandbox, pod, f"echo '# my fix' >> {path}/__init__.py")
    current = head(sandbox, pod, path)
    older = pinned(sandbox, "ComfyUI-KJNodes", 0)
    result = converge_pods(
        {pod["name"]: {"custom_nodes": node_pins(sandbox, **{"ComfyUI-KJNodes": older})}},
        workdir=_workdir(sandbox),
    )[pod["address"]]
    assert not result.failed
    assert f"{path} has local changes (__init__.py): left alone" in caplog.text
    assert head(sandbox, pod, path) == current
    assert pod_shell(sandbox, pod, f"tail -1 {path}/__init__.py") == "# my fix\n"
    pod_shell(sandbox, pod, f"git -C {path} checkout -- __init__.py")
    assert not converge()[pod["address"]].failed


def test_a_pin_the_remote_lacks_fails_its_pod_naming_url_and_commit(deployed, sandbox, caplog):
    pod = sandbox["pods"][1]
    missing = {**pinned(sandbox, "ComfyUI-GGUF"), "commit": "f" * 40}
    result = converge_pods(
        {pod["name"]: {"custom_nodes": node_pins(sandbox, **{"ComfyUI-GGUF": missing})}},
        workdir=_workdir(sandbox),
    )[pod["address"]]
    # Refused before any change: the lock's check reads each pin's requirements first.
    assert result.failed and result.changed == []
    assert (
        f"preflight refused: cannot fetch ComfyUI-GGUF at {'f' * 12} from {missing['url']}"
        f" (fatal: remote error: upload-pack: not our ref {'f' * 40}): check the pin"
    ) in caplog.text
    assert head(sandbox, pod, f"{NODES}/ComfyUI-GGUF") == pinned(sandbox, "ComfyUI-GGUF")["commit"]
    assert converge()[pod["address"]].changed == []


def _workdir(sandbox):
    return Path(sandbox["base"])
