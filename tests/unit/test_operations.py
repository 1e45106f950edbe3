"""podforge's own operations: what each yields for each state the batched facts report."""

from __future__ import annotations

import hashlib

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state

from operations import git, pod_files

URL = "git://127.0.0.1:9418/ComfyUI-GGUF.git"
PIN = "795e45156ece99afbc3efef911e63fcb46e6a20d"
OLD = "0" * 40
DEST = "/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF"


@pytest.fixture
def on_host():
    """Run an operation's generator as pyinfra does, on an @local host that is never touched."""
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("@local")

    def run(operation, **kwargs):
        with ctx_state.use(state), ctx_host.use(host):
            return [
                str(c) if isinstance(c, (str, StringCommand)) else c
                for c in operation._inner(**kwargs)
            ]

    return run


def checkout(head, dirty=(), is_git=True, url=URL):
    return {"git": is_git, "head": head, "url": url, "dirty": list(dirty)}


def test_checkout_at_the_pin_changes_nothing(on_host):
    assert on_host(git.pinned_checkout, dest=DEST, url=URL, commit=PIN, present=checkout(PIN)) == []


def test_a_missing_checkout_is_fetched_shallowly_at_the_pin(on_host):
    commands = on_host(git.pinned_checkout, dest=DEST, url=URL, commit=PIN, present=None)
    assert commands[0] == f"mkdir -p {DEST} && git -C {DEST} init -q"
    assert commands[1] == f"git -C {DEST} remote add origin {URL}"
    assert commands[2].startswith(f"git -C {DEST} fetch -q --depth 1 origin {PIN} || ")
    assert f"{URL} has no commit {PIN}" in commands[2]
    assert commands[3] == (f"git -C {DEST} -c advice.detachedHead=false checkout -q --detach {PIN}")


def test_a_moved_pin_fetches_and_checks_out_without_init(on_host):
    commands = on_host(git.pinned_checkout, dest=DEST, url=URL, commit=PIN, present=checkout(OLD))
    assert len(commands) == 2 and "fetch" in commands[0] and "checkout" in commands[1]


def test_a_new_url_is_set_before_fetching(on_host):
    commands = on_host(
        git.pinned_checkout,
        dest=DEST,
        url=URL,
        commit=PIN,
        present=checkout(OLD, url="https://github.com/old/fork"),
    )
    assert commands[0] == f"git -C {DEST} remote set-url origin {URL}"


@pytest.mark.parametrize(
    "present", [checkout(OLD, dirty=["nodes.py"]), checkout(None, is_git=False, url=None)]
)
def test_local_changes_are_reported_and_left_alone(on_host, present, caplog):
    assert on_host(git.pinned_checkout, dest=DEST, url=URL, commit=PIN, present=present) == []
    warning = caplog.records[-1].getMessage()
    assert DEST in warning and "left alone" in warning and PIN[:12] in warning


def test_content_uploads_only_what_differs(on_host):
    text = "CUDA_VISIBLE_DEVICES=0\n"
    digest = {"sha1": hashlib.sha1(text.encode()).hexdigest(), "mode": "644"}
    same = {"files": {"/opt/podforge/a.env": digest}, "dirs": {}}
    assert on_host(pod_files.content, dest="/opt/podforge/a.env", text=text, digests=same) == []
    changed_mode = on_host(
        pod_files.content, dest="/opt/podforge/a.env", text=text, digests=same, mode="600"
    )
    absent = on_host(
        pod_files.content, dest="/opt/podforge/a.env", text=text, digests={"files": {}, "dirs": {}}
    )
    for commands in (changed_mode, absent):
        assert commands[0] == "mkdir -p /opt/podforge"
        assert isinstance(commands[1], FileUploadCommand)
        assert commands[1].src.read() == text.encode()
    assert changed_mode[2] == "chmod 600 /opt/podforge/a.env"


def test_directories_makes_only_the_missing_ones(on_host):
    present = {"files": {}, "dirs": {"/w/a": "755", "/w/b": None}}
    assert on_host(pod_files.directories, paths=["/w/a", "/w/b", "/w/c"], digests=present) == [
        "mkdir -p /w/b /w/c"
    ]
    assert on_host(pod_files.directories, paths=["/w/a"], digests=present) == []


def test_a_directory_with_a_mode_is_made_with_it(on_host):
    present = {"files": {}, "dirs": {"/o/secrets": "755", "/o/logs": "755"}}
    assert on_host(
        pod_files.directories,
        paths=["/o/secrets", "/o/logs"],
        digests=present,
        modes={"/o/secrets": "700"},
    ) == ["mkdir -p -m 700 /o/secrets && chmod 700 /o/secrets"]
    right = {"files": {}, "dirs": {"/o/secrets": "700"}}
    assert (
        on_host(
            pod_files.directories, paths=["/o/secrets"], digests=right, modes={"/o/secrets": "700"}
        )
        == []
    )
