"""Input from strangers, one table per entry point: a workflow (from a URL, say),
custom_models, the fetch manifest, settings and the CLI. Each case is refused with its one
line (no traceback, no secret), or is harmless; and a property test of the path rule."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import REPO
from podforge.core.config import SettingsError, load_settings
from podforge.core.paths import PathError, inside, relative_path
from podforge.core.pins import DEFAULT_CUSTOM_NODES
from podforge.pod.fetch import FetchError, read_manifest
from podforge.workflows.graph import WorkflowError
from podforge.workflows.needs import workflow_needs

SECRET = "hf_s3cretTOKENvalue0123456789"
HF = "https://huggingface.co/Comfy-Org/x/resolve/main/split_files/x.safetensors"


def ui_workflow(**model: object) -> dict[str, object]:
    """A UI-format workflow of one loader naming one model (as ComfyUI's templates do)."""
    node = {"id": 4, "type": "CheckpointLoaderSimple", "properties": {"models": [model]}}
    return {"nodes": [node]}


def needs_of(workflow: object) -> list[str]:
    needs = workflow_needs("evil.json", workflow, [], list(DEFAULT_CUSTOM_NODES))
    return [model.dest for model in needs.models]


CLIMBS = "a model's directory and name: a path's parts cannot be empty, '.' or '..'"


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        (
            ui_workflow(name="../../../../root/.ssh/authorized_keys", directory="checkpoints"),
            f"evil.json: CheckpointLoaderSimple #4: {CLIMBS}",
        ),
        (ui_workflow(name="x.safetensors", directory="../../etc"), CLIMBS),
        (
            ui_workflow(name="evil", directory="/etc/cron.d"),
            "an absolute path leaves the models dir",
        ),
        (ui_workflow(name="..\\..\\..\\etc\\passwd", directory="loras"), CLIMBS),
        (ui_workflow(name="x\x00.safetensors", directory="loras"), "control characters"),
        (ui_workflow(name="x" * 300, directory="loras"), "longer than 255 bytes"),
        (
            {"nodes": [{"id": 1, "type": "X", "properties": ["models"]}]},
            "evil.json: X #1: 'properties' is not an object",
        ),
        (ui_workflow(name=7, directory="loras"), "name, directory, url and hash are strings"),
        (ui_workflow(name="x", directory="loras", url=7), "are strings"),
        (
            {"nodes": [], "definitions": {"subgraphs": [{"nodes": 3}]}},
            "evil.json: subgraph 0 has no 'nodes' list",
        ),
        ({"nodes": [], "definitions": {"subgraphs": "x"}}, "definitions.subgraphs is not a list"),
        (
            {"nodes": [{"id": 2, "type": "T", "properties": {"aux_id": "a/b; curl x | sh"}}]},
            "the node pack 'a/b; curl x | sh' is not a registry id or a GitHub owner/repo",
        ),
        (
            ui_workflow(
                name="x.safetensors",
                directory="loras",
                url=f"http://evil.example/x.safetensors?token={SECRET}",
            ),
            "the model URL http://evil.example/x.safetensors: expected an https:// URL",
        ),
        (ui_workflow(name="x.safetensors", directory="loras", url=f"ftp://u:{SECRET}@h/x"), "URL"),
        ([], "not a ComfyUI workflow"),
    ],
)
def test_a_hostile_workflow_is_refused_in_one_line(workflow, message):
    with pytest.raises(WorkflowError) as refused:
        needs_of(workflow)
    text = str(refused.value)
    assert message in text and "\n" not in text and SECRET not in text


@pytest.mark.parametrize(
    ("name", "directory", "dest"),
    [
        ("wan/x.safetensors", "diffusion_models", "diffusion_models/wan/x.safetensors"),
        ("wan\\x.safetensors", "diffusion_models", "diffusion_models/wan/x.safetensors"),
        ("x..y.safetensors", "loras", "loras/x..y.safetensors"),  # dots inside a name
    ],
)
def test_subfolders_inside_a_model_folder_stay_legal(name, directory, dest):
    assert needs_of(ui_workflow(name=name, directory=directory, url=HF)) == [dest]


def custom(*entries: object) -> str:
    return json.dumps(list(entries))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CUSTOM_MODELS": custom({"url": HF, "dest": "../../../etc/cron.d/evil"})},
            "CUSTOM_MODELS[0].dest='../../../etc/cron.d/evil' is not accepted: a path's parts",
        ),
        (
            {"CUSTOM_MODELS": custom({"url": HF, "dest": "/root/.ssh/authorized_keys"})},
            "CUSTOM_MODELS[0].dest='/root/.ssh/authorized_keys' is not accepted: an absolute",
        ),
        ({"CUSTOM_MODELS": custom({"url": HF, "dest": ""})}, "expected a relative path"),
        (
            {
                "CUSTOM_MODELS": custom(
                    {"url": HF, "dest": "loras/x.safetensors"},
                    {"url": HF, "dest": "loras\\x.safetensors"},
                )
            },
            "custom_models[0] and custom_models[1] both go to loras/x.safetensors: keep one",
        ),
        (
            {"CUSTOM_MODELS": custom({"url": HF, "dest": "loras/x", "bytes": True})},
            "CUSTOM_MODELS[0].bytes=True is not accepted",
        ),
        (
            {"CUSTOM_MODELS": custom({"url": f"http://e.example/x?token={SECRET}", "dest": "a"})},
            "CUSTOM_MODELS[0].url='http://e.example/x' is not accepted",
        ),
        ({"CUSTOM_MODELS": custom(f"https://e.example/x?token={SECRET}")}, "CUSTOM_MODELS[0]"),
        (
            {"COMFYUI_LISTEN": "0.0.0.0; location /open { auth_basic off; }"},
            "expected an IP address",
        ),
        ({"COMFYUI_API_TOKEN": 'abc" off; "" off; "x', "COMFYUI_PASSWORD": "pw"}, "<hidden>"),
        ({"COMFYUI_PRIVATE_LISTEN": "0.0.0.0"}, "keep it on 127.0.0.1"),
        ({"HF_ENDPOINT": "https://hf.example/ x"}, "without spaces, quotes"),
        ({"HF_ENDPOINT": "http://hf.example"}, "plain http only to localhost"),
        ({"MODELS_STAGING_DIR": "/tmp;reboot"}, "expected an absolute path of letters"),
        ({"MODELS_DIR": "/workspace/../etc"}, "expected a normalised path: no"),
        ({"MODELS_DIR": "models"}, "expected an absolute path"),
        ({"R2_BUCKET": "b; rm"}, "expected a bucket name"),
        ({"HF_TOKEN": f"{SECRET}\nX-Evil: 1"}, "HF_TOKEN=<hidden> is not accepted"),
        ({"ENABLE_STEADYDANCR": "true"}, "did you mean ENABLE_STEADYDANCER?"),
        (
            {"COMFYUI_ARGS": "--output-directory '/x\n[program:evil]'"},
            "--output-directory: expected an absolute path of letters",
        ),
        ({"COMFYUI_ARGS": "--output-directory '/x; reboot'"}, "expected an absolute path"),
        (
            {"WORKFLOWS": json.dumps([f"http://u:{SECRET}@evil.example/w.json?t={SECRET}"])},
            "WORKFLOWS[0]='http://evil.example/w.json' is not accepted",
        ),
        (
            {
                "COMFYUI_REPO": json.dumps(
                    {"name": "ComfyUI", "url": "ext::sh -c reboot", "commit": "a" * 40}
                )
            },
            "COMFYUI_REPO.url='ext::sh -c reboot' is not accepted",
        ),
    ],
)
def test_hostile_settings_are_refused_in_one_line(environ, message):
    with pytest.raises(SettingsError) as refused:
        load_settings({}, environ)
    text = str(refused.value)
    assert message in text and "\n" not in text and SECRET not in text


def test_a_typo_in_host_data_names_the_setting_it_almost_is():
    with pytest.raises(SettingsError, match="did you mean enable_steadydancer"):
        load_settings({"enable_steadydancr": True}, {})
    # pyinfra's own keys and other programs' variables are no typos.
    load_settings({"ssh_user": "root", "pod_name": "p1"}, {"COMFYUI_PATH": "/x", "HOME": "/"})


def test_the_private_listen_may_leave_loopback_only_without_the_login():
    settings = load_settings({}, {"COMFYUI_PRIVATE_LISTEN": "0.0.0.0", "COMFYUI_AUTH": "off"})
    assert settings.comfyui_private_listen == "0.0.0.0"


MODELS = "/workspace/ComfyUI/models"


def manifest(tmp_path: Path, *dests: str, **fields: object) -> Path:
    path = tmp_path / "manifest.json"
    entries = [{"url": "https://e.example/x", "dest": dest, **fields} for dest in dests]
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize(
    ("dests", "fields", "message"),
    [
        ((f"{MODELS}/../../../etc/cron.d/x",), {}, "is not a file inside the models dir"),
        (("/etc/cron.d/x",), {}, "is not a file inside the models dir /workspace/ComfyUI/models"),
        ((MODELS,), {}, "is not a file inside the models dir"),
        (("/",), {}, "is not a file inside the models dir"),
        ((f"{MODELS}/loras/x\x00y",), {}, "control characters"),
        ((f"{MODELS}/loras/{'x' * 256}",), {}, "longer than 255 bytes"),
        ((f"{MODELS}/loras/x", f"{MODELS}/loras/x"), {}, "entries share a dest"),
        ((f"{MODELS}/loras/x",), {"url": "https://e.example/a b"}, "url: expected an https"),
        ((f"{MODELS}/loras/x",), {"url": "https://e.example/a\r\nHost: x"}, "url: expected"),
        ((f"{MODELS}/loras/x",), {"bytes": True}, "bytes: Input should be a valid integer"),
    ],
)
def test_a_hostile_manifest_is_refused_before_anything_is_opened(tmp_path, dests, fields, message):
    with pytest.raises(FetchError) as refused:
        read_manifest(manifest(tmp_path, *dests, **fields), Path(MODELS))
    assert message in str(refused.value)


def test_a_symlink_out_of_the_models_dir_is_refused(tmp_path):
    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    (models / "escape").symlink_to(tmp_path / "elsewhere")
    (models / "loras" / "x").mkdir()
    with pytest.raises(FetchError, match="leads outside the models dir .* through a symlink"):
        read_manifest(manifest(tmp_path, f"{models}/escape/evil"), models)
    with pytest.raises(FetchError, match=r"loras/x is a directory"):
        read_manifest(manifest(tmp_path, f"{models}/loras/x"), models)
    (wanted,) = read_manifest(manifest(tmp_path, f"{models}/loras/y.safetensors"), models)
    assert wanted.dest == f"{models}/loras/y.safetensors"


def podforge(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("make", "args", "code", "message"),
    [
        (
            lambda tmp: manifest(tmp, f"{tmp}/models/x.pth").write_text("[]") or [],
            ["--staging", "{tmp}/staging-file"],
            0,  # an empty manifest fetches nothing, wherever staging is
            "fetch: 0 fetched",
        ),
        (
            lambda tmp: [],
            ["--staging", "{tmp}/staging-file"],
            1,
            "podforge fetch: FAILED --staging {tmp}/staging-file is a file, not a directory",
        ),
        (
            lambda tmp: [],
            ["--models-dir", "{tmp}/other"],
            1,
            "is not a file inside the models dir {tmp}/other",
        ),
    ],
)
def test_fetch_flags_are_judged_in_one_line(tmp_path, make, args, code, message):
    (tmp_path / "staging-file").write_text("a file")
    entries = make(tmp_path)
    path = tmp_path / "manifest.json"
    if entries == []:
        path.write_text(json.dumps([{"url": "https://e.example/x", "dest": f"{tmp_path}/m/x"}]))
    argv = [arg.format(tmp=tmp_path) for arg in args]
    done = podforge("fetch", str(path), *argv)
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert message.format(tmp=tmp_path) in output
    assert "Traceback" not in output


def test_a_typo_in_plans_data_is_refused_naming_the_setting():
    done = podforge("plan", "--data", "enable_steadydancr=true")
    assert done.returncode == 2
    assert done.stderr == (
        "podforge: enable_steadydancr (host data) is not a setting: did you mean"
        " enable_steadydancer?\n"
    )


# The path rule, for any text a stranger's workflow may hold.
@given(st.text(max_size=40), st.text(max_size=40))
def test_no_name_and_folder_lead_outside_the_models_dir(folder, name):
    try:
        dest = inside(MODELS, f"{folder}/{name}")
    except PathError:
        return
    assert posixpath.normpath(dest) == dest
    assert dest.startswith(MODELS + "/")
    assert ".." not in dest[len(MODELS) + 1 :].split("/")


@given(st.lists(st.sampled_from(["..", ".", "", "a", "b.safetensors", "\\", "/"]), max_size=8))
def test_joined_parts_never_climb(parts):
    text = "".join(parts)
    try:
        relative = relative_path(text)
    except PathError:
        return
    assert posixpath.normpath(relative) == relative and not relative.startswith("/")


def test_ctrl_c_ends_a_fetch_with_one_line_at_once(tmp_path):
    # A server that accepts and never answers: the fetcher is waiting on it when Ctrl-C comes.
    import signal
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps([{"url": f"http://127.0.0.1:{port}/x.pth", "dest": f"{tmp_path}/m/x.pth"}])
    )
    fetcher = subprocess.Popen(
        [sys.executable, "-m", "podforge", "fetch", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connection, _ = server.accept()  # the fetcher asks, and waits
        began = time.monotonic()
        fetcher.send_signal(signal.SIGINT)
        out, err = fetcher.communicate(timeout=30)
        assert time.monotonic() - began < 10
    finally:
        fetcher.kill()
        server.close()
    connection.close()
    assert fetcher.returncode == 130
    assert err == "podforge fetch: interrupted; the partial files stay, the next run resumes them\n"


def test_asking_a_dead_host_says_each_retry_and_asks_for_all_at_once(tmp_path):
    import io
    import socket

    from podforge.pod.fetch import fetch_all
    from podforge.pod.remotes import Sources
    from podforge.pod.retry import Backoff

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: every ask is refused
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            [
                {"url": f"http://127.0.0.1:{port}/{n}.pth", "dest": f"{tmp_path}/m/{n}.pth"}
                for n in range(40)
            ]
        )
    )
    out = io.StringIO()
    sources = Sources(hf_endpoint="http://127.0.0.1:9", hf_token=None)
    with pytest.raises(FetchError) as failure:
        fetch_all(
            read_manifest(path, tmp_path / "m"),
            sources,
            out=out,
            backoff=Backoff(attempts=2, first_delay_s=0.01),
        )
    retries = [line for line in out.getvalue().splitlines() if "; again in " in line]
    assert len(retries) == 40  # each file's retry said, none silenced
    assert retries[0].startswith(f"fetch: asking for http://127.0.0.1:{port}/")
    assert str(failure.value).count("failed 2 times") == 40


def test_a_workflow_url_whose_name_is_no_file_name_is_refused(tmp_path):
    from podforge.workflows.files import workflow_files

    settings = load_settings({"workflows": ["https://evil.example/a/.."]}, {})
    # Read from a file here (no network): the name is judged before anything is written.
    from podforge.workflows import files as module

    module.read.cache_clear()
    original = module.read
    module.read = lambda where, base=REPO: '{"nodes": []}'  # type: ignore[assignment]
    try:
        with pytest.raises(WorkflowError, match=r"its file name '\.\.' is no name"):
            workflow_files(settings)
    finally:
        module.read = original
