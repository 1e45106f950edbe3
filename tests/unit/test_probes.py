"""The pod-state fact and its probes on real git checkouts, a real venv, real files and
model files judged like the fetcher judges them."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata

import pytest

from facts.pod import PodState
from podforge.pod import stamps
from podforge.probe.serving import observe
from podforge.probe.state import (
    detached_head,
    digests,
    installed_debs,
    origin_url,
    repo_state,
    software,
    venv_distributions,
)


def git(path, *args):
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
        "HOME": str(path),
    }
    return subprocess.run(
        ["git", "-C", str(path), *args], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path):
    path.mkdir()
    git(path, "init", "-q")
    (path / "requirements.txt").write_text("numpy\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    git(path, "remote", "add", "origin", "https://example.invalid/node")
    return git(path, "rev-parse", "HEAD")


def test_repo_state_reads_head_origin_and_tracked_changes(tmp_path):
    head = make_repo(tmp_path / "node")
    assert repo_state(str(tmp_path / "node")) == {
        "git": True,
        "head": head,
        "url": "https://example.invalid/node",
        "dirty": [],
    }
    index = (tmp_path / "node" / ".git" / "index").read_bytes()
    os.utime(tmp_path / "node" / "requirements.txt", ns=(1, 1))  # same content, new stat
    assert repo_state(str(tmp_path / "node"))["dirty"] == []
    assert (tmp_path / "node" / ".git" / "index").read_bytes() == index  # read, not refreshed
    (tmp_path / "node" / "untracked.txt").write_text("mine")  # not a local change of the node
    assert repo_state(str(tmp_path / "node"))["dirty"] == []
    (tmp_path / "node" / "requirements.txt").write_text("numpy>=2\n")
    assert repo_state(str(tmp_path / "node"))["dirty"] == ["requirements.txt"]


def test_a_checkout_at_its_pin_is_read_without_git(tmp_path, monkeypatch):
    node = tmp_path / "node"
    head = make_repo(node)
    git(node, "checkout", "-q", "--detach", head)  # as pinned_checkout leaves it
    (node / "requirements.txt").write_text("numpy>=2\n")
    off_pin = repo_state(str(node), pin="f" * 40)
    assert off_pin == {
        "git": True,
        "head": head,
        "url": "https://example.invalid/node",
        "dirty": ["requirements.txt"],
    }
    # At the pin no git runs (none is on PATH now): the same head and origin, changes not asked.
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert repo_state(str(node), pin=head) == {**off_pin, "dirty": None}
    with pytest.raises(FileNotFoundError, match="git"):
        repo_state(str(node), pin="f" * 40)


def test_detached_head_is_what_git_names(tmp_path):
    node = tmp_path / "node"
    head = make_repo(node)
    assert detached_head(str(node)) is None  # on a branch: HEAD is "ref: refs/heads/..."
    assert repo_state(str(node), pin=head)["head"] == head  # then git says where it is
    git(node, "checkout", "-q", "--detach", head)
    assert detached_head(str(node)) == git(node, "rev-parse", "HEAD") == head
    assert detached_head(str(tmp_path)) is None  # no .git/HEAD at all


def test_origin_url_reads_what_git_config_prints(tmp_path):
    make_repo(tmp_path / "node")
    node = tmp_path / "node"
    assert origin_url(str(node)) == "https://example.invalid/node"
    git(node, "remote", "add", "upstream", "https://example.invalid/upstream")
    for url in ("https://example.invalid/a#b;c", "git@example.invalid:org/node.git"):
        git(node, "remote", "set-url", "origin", url)
        assert origin_url(str(node)) == git(node, "config", "--get", "remote.origin.url") == url
    git(node, "remote", "remove", "origin")
    assert origin_url(str(node)) is None


def test_repo_state_without_a_checkout(tmp_path):
    assert repo_state(str(tmp_path / "absent")) is None
    (tmp_path / "copied").mkdir()
    assert repo_state(str(tmp_path / "copied")) == {
        "git": False,
        "head": None,
        "url": None,
        "dirty": [],
    }


def test_venv_distributions_match_importlib(tmp_path):
    from packaging.utils import canonicalize_name

    found = {canonicalize_name(name): v for name, v in venv_distributions(sys.prefix).items()}
    # Every distribution of this venv, as importlib reads them from their METADATA files.
    site_packages = sysconfig.get_paths()["purelib"]
    assert found == {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[site_packages])
    }
    assert found["pyinfra"] == metadata.version("pyinfra")
    assert venv_distributions(str(tmp_path)) is None


NO_SOFTWARE = {
    "repos": {},
    "venv": "/none",
    "tools": "/none",
    "deployer": "/none",
    "workflows": "/none",
}
NO_FILES: dict[str, list[str]] = {"patterns": [], "dirs": []}


def models_command(dests: list[str]) -> str:
    return PodState().command(software=NO_SOFTWARE, files=NO_FILES, models=dests)


def run_fact(software=None, files=None, models=(), serving=None):
    """PodState's one command run here as on a pod; its processed result."""
    fact = PodState()
    command = fact.command(
        software=software or NO_SOFTWARE,
        files=files or NO_FILES,
        models=list(models),
        serving=serving,
    )
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return fact.process(out.stdout.splitlines())


def run_models(dests: list[str]) -> list[dict]:
    """The models' statuses as the deploy judges what the fact read (tasks/desired.py)."""
    return [stamps.status_of(read) for read in run_fact(models=dests)["models"]]


def test_the_pod_state_fact_reads_software_in_its_one_command(tmp_path):
    head = make_repo(tmp_path / "ComfyUI")
    workflows = tmp_path / "workflows.json"
    workflows.write_text('{"request": "r", "files": {"/w/podforge-a.json": "\u00e9"}}')
    pins = {str(tmp_path / "ComfyUI"): "0" * 40, str(tmp_path / "none"): "1" * 40}
    result = run_fact(
        software={
            "repos": pins,
            "venv": sys.prefix,
            "tools": sys.prefix,
            "deployer": str(tmp_path / "no-deployer"),
            "workflows": str(workflows),
        }
    )["software"]
    assert result["repos"][str(tmp_path / "ComfyUI")]["head"] == head
    assert result["repos"][str(tmp_path / "none")] is None
    assert result["venv"]["pyinfra"] == metadata.version("pyinfra") == result["tools"]["pyinfra"]
    # Stamps come back as their text: the controller parses them (tasks/desired.py).
    assert result["workflows"] == workflows.read_text()
    assert result["deployer"] is None and result["supervisord"] is False
    assert "git" in result["debs"]  # this machine's dpkg, as the pod's is read
    assert result == software(
        pins,
        sys.prefix,
        sys.prefix,
        str(tmp_path / "no-deployer"),
        str(workflows),
    )


def test_the_probe_passes_any_text_through(tmp_path):
    odd = tmp_path / "workflows.json"
    odd.write_bytes('{"k": "\\n \' \\" \u00e9 \U0001f600"}\n'.encode() + b"\xff")
    software = {**NO_SOFTWARE, "workflows": str(odd), "repos": {str(tmp_path / "it's"): "0" * 40}}
    result = run_fact(software=software)["software"]
    assert result["workflows"] == odd.read_bytes().decode("utf-8", "replace")
    assert result["repos"] == {str(tmp_path / "it's"): None}


def test_the_pod_state_fact_reads_the_deploys_files_in_its_one_command(tmp_path):
    (tmp_path / "a.env").write_text("A=1\n")
    (tmp_path / "start.sh").write_text("#!/bin/sh\n")
    (tmp_path / "start.sh").chmod(0o755)
    result = run_fact(
        files={
            "patterns": [f"{tmp_path}/*.env", f"{tmp_path}/start.sh"],
            "dirs": [str(tmp_path), str(tmp_path / "no")],
        }
    )["files"]
    sha1 = subprocess.run(["sha1sum", str(tmp_path / "a.env")], capture_output=True, text=True)
    assert result["files"][f"{tmp_path}/a.env"] == {"sha1": sha1.stdout.split()[0], "mode": "644"}
    assert result["files"][f"{tmp_path}/start.sh"]["mode"] == "755"
    mode = f"{tmp_path.stat().st_mode & 0o7777:o}"
    assert result["dirs"] == {str(tmp_path): mode, str(tmp_path / "no"): None}
    assert result == digests(
        [f"{tmp_path}/*.env", f"{tmp_path}/start.sh"], [str(tmp_path), str(tmp_path / "no")]
    )


def test_the_pod_state_fact_asks_whether_the_pod_serves_only_when_told(tmp_path):
    from conftest import free_port

    port = free_port()  # nothing listens there
    instance = {"device": 0, "port": port, "args": ["--listen", "127.0.0.1", "--port", str(port)]}
    asked = {"comfyui": [instance], "r2sync": True, "log_dir": str(tmp_path)}
    seen = run_fact(serving=asked)["serving"]
    assert seen == observe(**asked)
    assert seen["manager"] == "supervisor" and seen["states"] == {}  # no supervisord here
    assert seen["answers"] == [{"error": "[Errno 111] Connection refused"}]
    assert run_fact()["serving"] is None


def test_installed_debs_are_those_dpkg_marks_installed(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: curl\nStatus: install ok installed\nVersion: 7.88\n\n"
        "Package: supervisor\nStatus: deinstall ok config-files\nVersion: 4.2\n\n"
        "Package: git\nArchitecture: amd64\nStatus: install ok installed\n\n"
    )
    assert installed_debs(str(status)) == ["curl", "git"]
    assert installed_debs(str(tmp_path / "no-dpkg")) == []


def test_missing_unstamped_stamped_changed_and_garbled_files(tmp_path):
    missing, unstamped, stamped, changed, garbled = (str(tmp_path / n) for n in "abcde")
    for path in (unstamped, stamped, changed, garbled):
        with open(path, "wb") as out:
            out.write(b"x" * 10)
    stamps.write_stamp(stamped, "f" * 64, "civitai:5:")
    stamps.write_stamp(changed, "e" * 64)
    with open(changed, "ab") as out:
        out.write(b"more")
    stamps.write_stamp(garbled, "d" * 64)
    with open(stamps.stamp_path(garbled), "w") as out:
        out.write('{"size": 10, "mt')  # cut short, as by a full disk
    dests = [missing, unstamped, stamped, changed, garbled]
    statuses = {s["dest"]: s for s in run_models(dests)}
    assert statuses[missing] == {"dest": missing, "size": None, "sha256": None, "source": None}
    assert statuses[unstamped]["sha256"] is None
    assert statuses[stamped] == {
        "dest": stamped,
        "size": 10,
        "sha256": "f" * 64,
        "source": "civitai:5:",
    }
    assert statuses[changed] == {"dest": changed, "size": 14, "sha256": None, "source": None}
    assert statuses[garbled] == {"dest": garbled, "size": 10, "sha256": None, "source": None}
    # A file from another source is not the one wanted; a stamp from before sources were
    # recorded is judged by size and sha256 alone.
    assert stamps.is_current(statuses[stamped], 10, None, "civitai:5:")
    assert not stamps.is_current(statuses[stamped], 10, None, "civitai:6:")
    legacy = {**statuses[stamped], "source": None}
    assert stamps.is_current(legacy, 10, "f" * 64, "civitai:6:")
    # The deploy judges what the probe read as the fetcher judges the file on the pod.
    assert statuses == {dest: stamps.file_status(dest) for dest in dests}
    assert stamps.is_current(statuses[stamped], 10, "f" * 64)
    assert not stamps.is_current(statuses[stamped], 11, None)
    assert not stamps.is_current(statuses[stamped], None, "0" * 64)


def test_a_touched_file_loses_its_stamp(tmp_path):
    path = str(tmp_path / "model.safetensors")
    with open(path, "wb") as out:
        out.write(b"weights")
    stamps.write_stamp(path, "a" * 64)
    os.utime(path, ns=(1, 1))
    (status,) = run_models([path])
    assert status["sha256"] is None


def test_one_command_whatever_the_number_of_files(tmp_path):
    dests = [str(tmp_path / f"model-{i:02d}.safetensors") for i in range(50)]
    five, fifty = models_command(dests[:5]), models_command(dests)
    # 45 more files add their paths (and their stamps') to the one command, no more.
    # Plus a tuple's punctuation, its quotes escaped for the shell.
    per_file = len(dests[0]) + len(stamps.stamp_path(dests[0])) + 32
    assert len(fifty) - len(five) <= 45 * per_file
    assert len(run_models(dests)) == 50


def test_the_pods_python_path_and_site_cannot_reach_the_probe(tmp_path, monkeypatch):
    # Images set PYTHONPATH, and a site-packages .pth runs code at every interpreter start:
    # neither may shadow a module the probe imports or break its one command.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "glob.py").write_text("raise SystemExit('shadowed glob imported')\n")
    (shadow / "sitecustomize.py").write_text("raise SystemExit('sitecustomize ran')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    dest = tmp_path / "model.safetensors"
    dest.write_bytes(b"x" * 10)
    assert run_models([str(dest)]) == [
        {"dest": str(dest), "size": 10, "sha256": None, "source": None}
    ]


def test_a_damaged_stamp_counts_as_none_and_the_deploy_says_so(caplog):
    from pyinfra.api import Config, Inventory, State
    from pyinfra.context import ctx_host, ctx_state

    from tasks.desired import stamp

    inventory = Inventory((["@local"], {}))
    path = "/opt/podforge/workflows.json"
    with ctx_state.use(State(inventory, Config())), ctx_host.use(inventory.get_host("@local")):
        assert stamp(path, '{"request": "r"}\n') == {"request": "r"}
        assert stamp(path, None) is None
        assert "damaged" not in caplog.text
        assert stamp(path, '{"request": "r", "fi') is None  # cut short by a full disk
        assert stamp(path, "[1]") is None
    assert caplog.text.count(f"{path} is damaged (not a JSON object): redoing it") == 2
    # Model stamps follow the same policy: the file is hashed again.
    read = {"dest": "/m", "size": 3, "mtime_ns": 1, "stamp": '{"size": 3, "mtime_ns": 1, "sha'}
    assert stamps.status_of(read) == {"dest": "/m", "size": 3, "sha256": None, "source": None}
