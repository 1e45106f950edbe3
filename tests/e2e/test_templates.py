"""ComfyUI's official templates provisioned end to end on a sandbox pod: the deploy reads
what each workflow names (Hugging Face and CivitAI models), fetches and verifies every file,
installs the workflows into the UI's folder, and verify checks them against the running
ComfyUI; a second deploy changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError

from e2e.conftest import pod_shell
from podforge.core.config import Settings
from podforge.workflows.fitting import USER_WORKFLOWS
from podforge.workflows.needs import workflow_needs
from sandbox.converge import converge, converge_pods
from sandbox.templates import SANDBOX_TEMPLATES, template_path

pytestmark = pytest.mark.e2e

DEFAULTS = {name: Settings.model_fields[name].default for name in Settings.model_fields}


def test_templates_come_with_every_model_fetched_verified_and_checked(sandbox, capfd):
    pod = sandbox["pods"][0]
    data = {"workflows": [str(template_path(name)) for name in SANDBOX_TEMPLATES]}
    first = converge_pods({pod["name"]: data}, workdir=Path(sandbox["base"]))[pod["address"]]
    assert not first.failed, first.errors
    assert {f"Workflows | Workflow {name}" for name in SANDBOX_TEMPLATES} <= set(first.changed)
    err = capfd.readouterr().err
    assert "verify: FAILED" not in err
    assert "every workflow has what it loads" in err  # verify checked them on the pod
    again = converge_pods({pod["name"]: data}, workdir=Path(sandbox["base"]))[pod["address"]]
    assert not again.failed and again.changed == [], again.changed
    models = DEFAULTS["models_dir"]
    for name in SANDBOX_TEMPLATES:
        needs = workflow_needs(name, json.loads(template_path(name).read_text()), [], [])
        for model in needs.models:
            stamp = f"{models}/{model.folder}/.podforge-verified/{model.name}.json"
            recorded = json.loads(pod_shell(sandbox, pod, f"cat {stamp}"))
            assert recorded["source"] == model.source.source_id
            assert (
                recorded["sha256"]
                == pod_shell(
                    sandbox, pod, f"sha256sum {models}/{model.dest} | cut -d' ' -f1"
                ).strip()
            )
        installed = f"{DEFAULTS['comfyui_dir']}/{USER_WORKFLOWS}/{name}"
        assert pod_shell(sandbox, pod, f"cat {installed}") == template_path(name).read_text()
    # Back to the session's recipe (no workflows named).
    assert all(not r.failed for r in converge().values())


def test_a_workflow_that_needs_an_unpinned_pack_stops_the_run_before_any_change(sandbox):
    pod = sandbox["pods"][0]
    animate = template_path("video_wan2_2_14B_animate.json")
    # Read before any operation, as a bad setting is: the run stops, naming what to add.
    with pytest.raises(DeployError) as raised:
        converge_pods({pod["name"]: {"workflows": [str(animate)]}}, Path(sandbox["base"]))
    assert str(raised.value).endswith(
        "DownloadAndLoadSAM2Model #108, Sam2Segmentation #107 come from the node pack "
        "ComfyUI-segment-anything-2, which is not pinned: add it to custom_nodes as "
        "{name, url, commit}"
    )
    installed = f"{DEFAULTS['comfyui_dir']}/{USER_WORKFLOWS}/{animate.name}"
    assert pod_shell(sandbox, pod, f"test -e {installed}; echo $?") == "1\n"
