"""The image build's pieces that need no build: the Dockerfile's build arguments are the
settings, the stack layer runs on its own modules alone, and its inputs are what the deploy
compares against (so the deploy after the stack layer changes nothing there)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from podforge import image
from podforge.config import SECRET_FIELDS, Settings, env_name, load_settings
from podforge.environment import stack_request
from podforge.gpu import GpuReport
from podforge.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
# Fixed by the Dockerfile itself: the phase (--data phase=image), where podforge and its
# deployer live, and start.sh (the ENTRYPOINT names it).
NOT_BUILD_ARGS = {"PHASE", "PODFORGE_DIR", "START_SCRIPT"}


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
    shipped = sorted(p.name for p in (tmp_path / "tools" / "podforge").iterdir())
    assert shipped == sorted(image.STACK_MODULES)
    # Only the tools dir on the path (-I: not the repo, not the cwd): every import resolves
    # there or fails, and podforge's other modules are not importable.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import podforge.image, podforge.stack_cli;"
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
    loaded = {name.split(".")[-1] + ".py" for name in modules if name != "podforge"}
    assert loaded <= set(image.STACK_MODULES)


def test_the_inputs_are_what_the_deploy_compares():
    node = {"name": "ComfyUI-GGUF", "url": "git://127.0.0.1/g.git", "commit": "c" * 40}
    settings = load_settings(
        {"phase": "image", "custom_nodes": [node], "comfyui_dir": "/opt/ComfyUI"}, {}
    )
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    inputs = image.stack_inputs(settings, plan)
    # The deploy's install_environment compares its stamp with this key; ComfyUI's task
    # checks out the same dirs at the same commits.
    assert inputs.request is not None
    assert inputs.request.key() == stack_request(settings, plan).key()
    assert inputs.stamp == settings.stack_stamp
    assert [(c.dest, c.commit) for c in inputs.checkouts] == [
        (dest, pin.commit) for dest, pin in settings.checkouts().items()
    ]
    assert inputs.checkouts[1].dest == "/opt/ComfyUI/custom_nodes/ComfyUI-GGUF"


def test_without_the_python_stack_the_layer_installs_no_environment():
    settings = load_settings({"phase": "image", "install_python_stack": False}, {})
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    assert image.stack_inputs(settings, plan).request is None


def test_a_bad_setting_is_one_line_from_the_inputs_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "podforge.image", "inputs", str(tmp_path / "inputs")],
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
