"""The image build's pieces that need no build: the Dockerfile's build arguments are the
settings, the stack layer runs on its own modules alone, its inputs are the committed lock and
the deploy's own commands (so the deploy after the stack layer changes nothing there), and a
stale lock stops the build."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from podforge.controller import image
from podforge.core.config import SECRET_FIELDS, Settings, env_name, load_settings
from podforge.core.gpu import GpuReport
from podforge.core.lock import lock_file
from podforge.core.plan import build_plan
from podforge.core.stacks import DEFAULT_STACK, FLASH_ATTN_SHA256, TOOLS_LOCK

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
# Fixed by the Dockerfile itself: the phase (--data phase=image), where podforge and its
# deployer live, and start.sh (the ENTRYPOINT names it).
# A pod's name is the pod's (its inventory gives it), not the image's.
NOT_BUILD_ARGS = {"PHASE", "PODFORGE_DIR", "START_SCRIPT", "POD_NAME"}


def stage_args(stage: str) -> list[str]:
    return re.findall(r"^ARG (\w+)$", stage, flags=re.MULTILINE)


def test_both_stages_take_every_public_setting_as_a_build_arg():
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)
    stack_inputs, final = stages[2], stages[3]
    wanted = {env_name(f) for f in Settings.model_fields if f not in SECRET_FIELDS}
    wanted -= NOT_BUILD_ARGS
    assert set(stage_args(stack_inputs)) == wanted
    assert stage_args(final) == stage_args(stack_inputs)


def test_secrets_are_never_build_args():
    # A build argument stays in the image's history.
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE, flags=re.MULTILINE))
    assert not declared & {env_name(f) for f in SECRET_FIELDS}


def test_image_paths_keep_code_and_venv_off_the_volume():
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, flags=re.MULTILINE))
    settings = load_settings({}, {k: v for k, v in defaults.items() if k != "BASE"})
    assert defaults["BASE"] == "nvidia/cuda:12.4.1-devel-ubuntu22.04"
    for path in (settings.comfyui_dir, settings.venv_dir, settings.podforge_dir):
        assert not path.startswith(settings.workspace_dir + "/")
    assert settings.models_dir.startswith(settings.workspace_dir + "/")
    assert 'ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/opt/podforge/start.sh"]' in DOCKERFILE
    assert "START_SCRIPT=/opt/podforge/start.sh" in DOCKERFILE


def test_the_stack_layer_runs_on_its_own_modules(tmp_path):
    settings = load_settings({"phase": "image"}, {})
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    image.write_inputs(tmp_path, image.stack_inputs(settings, plan))
    tools = tmp_path / "tools" / "podforge"
    shipped = sorted(str(p.relative_to(tools)) for p in tools.rglob("*.py"))
    assert shipped == sorted(image.STACK_MODULES)
    # Only the tools dir on the path (-I: not the repo, not the cwd): every import resolves
    # there or fails, and podforge's other modules are not importable.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import podforge.controller.image;"
        "print(sorted(m for m in sys.modules if m.startswith('podforge')))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(tmp_path / "tools")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    modules = ast.literal_eval(result.stdout)
    # podforge.controller.image -> controller/image.py; a package -> its __init__.py
    loaded = {
        "/".join(name.split(".")[1:]) + (".py" if name.count(".") == 2 else "/__init__.py")
        for name in modules
        if name != "podforge"
    }
    assert "controller/image.py" in loaded and loaded <= set(image.STACK_MODULES)


def test_the_inputs_are_the_committed_lock_and_the_deploys_commands():
    settings = load_settings({"phase": "image", "comfyui_dir": "/opt/ComfyUI"}, {})
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")  # a cp311 image
    inputs = image.stack_inputs(settings, plan)
    lock_text = (REPO / lock_file(DEFAULT_STACK)).read_text()
    # The layer's cache key holds the lock itself: a new lock, a new layer; nothing else.
    assert inputs.sync.startswith(lock_text)
    # flash-attn's release asset, pinned, comes with the layer, hash-checked.
    (flash_attn,) = plan.python_stack.built
    assert flash_attn.source_sha256 == FLASH_ATTN_SHA256[flash_attn.source.rsplit("/", 1)[1]]
    assert inputs.sync.endswith(
        f"flash-attn @ {flash_attn.source} --hash=sha256:{flash_attn.source_sha256}\n"
    )
    assert inputs.sync_file == "/opt/podforge/stack-sync.txt"
    # The tools' venv first, from its own lock; its uv then installs ComfyUI's.
    assert inputs.tools_sync.startswith((REPO / lock_file(TOOLS_LOCK)).read_text())
    assert inputs.commands[0].endswith(
        f"{settings.tools_dir}/bin/uv pip sync --python {settings.tools_dir}/bin/python"
        " --compile-bytecode /opt/podforge/tools-sync.txt"
    )
    (stack_sync,) = [command for command in inputs.commands if "stack-sync.txt" in command]
    assert stack_sync.endswith(
        f"{settings.tools_dir}/bin/uv pip sync --python {settings.venv_dir}/bin/python"
        " --compile-bytecode /opt/podforge/stack-sync.txt"
    )
    # ComfyUI's task checks out the same dirs at the same commits.
    assert [(c.dest, c.commit) for c in inputs.checkouts] == [
        (dest, pin.commit) for dest, pin in settings.checkouts().items()
    ]
    assert inputs.checkouts[1].dest == "/opt/ComfyUI/custom_nodes/ComfyUI-GGUF"


def test_an_openmmlab_image_layer_holds_the_features_lock_and_its_build_tools():
    settings = load_settings({"phase": "image", "enable_openmmlab": True}, {})
    plan = build_plan(settings, GpuReport(), sys.version_info[:3], "x86_64")
    inputs = image.stack_inputs(settings, plan)
    lock_text = (REPO / lock_file("torch25-cu124+openmmlab")).read_text()
    assert inputs.sync.startswith(lock_text)  # mmcv comes in the deploy step, built or fetched
    assert {"build-essential", "python3-dev"} <= set(inputs.debs)


def test_a_stale_lock_stops_the_inputs_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    node = git_repo(tmp_path / "ComfyUI-GGUF", {"requirements.txt": "gguf>=0.99\n"})
    settings = load_settings({"phase": "image", "custom_nodes": [node]}, {})
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    with pytest.raises(image.ImageError) as raised:
        image.stack_inputs(settings, plan)
    assert str(raised.value).startswith(
        f"the stack lock {lock_file(DEFAULT_STACK)} is stale (ComfyUI-GGUF's requirements.txt"
        " changed; "
    )
    assert "ComfyUI-KJNodes is no longer installed" in str(raised.value)


def git_repo(path: Path, files: dict[str, str]) -> dict[str, str]:
    """A repository with one commit, fetchable by sha as GitHub's are: its pin."""
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(path), "PATH": "/usr/bin:/bin"}
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"],
        ["config", "uploadpack.allowAnySHA1InWant", "true"],
    ):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {"name": path.name, "url": f"file://{path}", "commit": head}


def test_a_bad_setting_is_one_line_from_the_inputs_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "podforge.controller.image", "inputs", str(tmp_path / "inputs")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"STEADYDANCER_VARIANT": "fp32", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr == (
        "podforge image: STEADYDANCER_VARIANT='fp32' is not accepted:"
        " expected one of auto, fp16, fp8 or gguf\n"
    )
    assert not (tmp_path / "inputs").exists()
