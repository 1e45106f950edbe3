"""With no mirror directory, each pin's tree is fetched from its URL at its commit into a cache
(podforge/controller/upstream.py), for `stack lock` and the sandbox alike. GitHub is played by
local bare repositories that git's own ``url.<base>.insteadOf`` points the pins' URLs at."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from podforge.controller.upstream import UpstreamError, requirement_texts, tree_of
from podforge.core.pins import RepoPin
from sandbox import repos

GITHUB = "https://github.com/example/"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def publish(mirrors: Path, name: str, files: dict[str, str]) -> RepoPin:
    """A bare repository ``mirrors/<name>.git`` holding ``files`` in one commit; its pin, as
    GitHub would name it."""
    work = mirrors / f"{name}.work"
    work.mkdir(parents=True)
    for relative, text in files.items():
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        (work / relative).write_text(text)
    git("-C", str(work), "init", "-q", "-b", "main")
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    commit = git("-C", str(work), "rev-parse", "HEAD")
    bare = mirrors / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    git("-C", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true")
    return RepoPin(name=name, url=f"{GITHUB}{name}", commit=commit)


@pytest.fixture
def github(tmp_path, monkeypatch) -> Path:
    """No mirror, an empty cache, and every https://github.com/example/X at mirrors/X.git."""
    mirrors = tmp_path / "mirrors"
    mirrors.mkdir()
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "file://{mirrors}/"]\n\tinsteadOf = {GITHUB}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("PODFORGE_UPSTREAM", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return mirrors


def test_a_pin_is_fetched_once_into_the_cache(github, tmp_path):
    pin = publish(github, "ComfyUI-Fake", {"requirements.txt": "gguf>=0.13\n", "nodes.py": "x"})
    tree = tree_of(pin)
    assert tree == tmp_path / "cache" / "podforge" / "upstream" / f"ComfyUI-Fake-{pin.commit}"
    assert (tree / "nodes.py").read_text() == "x" and not (tree / ".git").exists()
    assert requirement_texts([pin]) == {"ComfyUI-Fake": "gguf>=0.13\n"}
    # "GitHub" gone: the cache answers.
    subprocess.run(["rm", "-rf", str(github / "ComfyUI-Fake.git")], check=True)
    assert tree_of(pin) == tree and requirement_texts([pin]) == {"ComfyUI-Fake": "gguf>=0.13\n"}


def test_a_deploy_reads_the_requirements_alone_and_keeps_them(github, tmp_path):
    pin = publish(github, "Node", {"requirements.txt": "einops\n", "big.bin": "x" * 10_000})
    assert requirement_texts([pin]) == {"Node": "einops\n"}
    assert not (tmp_path / "cache" / "podforge" / "upstream").exists()  # no tree for a deploy
    subprocess.run(["rm", "-rf", str(github / "Node.git")], check=True)
    assert requirement_texts([pin]) == {"Node": "einops\n"}


def test_a_pack_without_requirements_has_none(github):
    pin = publish(github, "Bare", {"__init__.py": ""})
    assert requirement_texts([pin]) == {"Bare": None}


def test_a_commit_the_remote_lacks_is_named_with_the_fix(github, tmp_path):
    pin = publish(github, "Moved", {"a": "1"})
    missing = pin.model_copy(update={"commit": "0" * 40})
    with pytest.raises(UpstreamError) as failed:
        tree_of(missing)
    message = str(failed.value)
    assert message.startswith(f"cannot fetch Moved at 000000000000 from {GITHUB}Moved (")
    assert "set PODFORGE_UPSTREAM" in message
    assert list((tmp_path / "cache" / "podforge" / "upstream").iterdir()) == []  # no half tree


def test_the_sandbox_serves_the_fetched_trees(github, tmp_path, monkeypatch):
    pins = [
        publish(github, "ComfyUI", {"main.py": "print(1)\n", "requirements.txt": "torch\n"}),
        publish(github, repos.BROKEN_PACK, {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"}),
    ]
    monkeypatch.setattr(repos, "upstream_pins", lambda: pins)
    served = repos.build_repos(tmp_path / "served")
    assert set(served) == {"ComfyUI", repos.BROKEN_PACK, repos.CONFLICTING_NODE}
    first = served["ComfyUI"]["commits"][0]
    shown = git("--git-dir", served["ComfyUI"]["path"], "show", f"{first}:main.py")
    assert shown == "print(1)"


def test_hosts_reading_one_pin_at_once_all_get_it(github):
    from concurrent.futures import ThreadPoolExecutor

    pin = publish(github, "Shared", {"requirements.txt": "gguf\n"})
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: requirement_texts([pin]), range(4)))
        trees = list(pool.map(lambda _: tree_of(pin), range(4)))
    assert texts == [{"Shared": "gguf\n"}] * 4
    assert len(set(trees)) == 1 and (trees[0] / "requirements.txt").read_text() == "gguf\n"
