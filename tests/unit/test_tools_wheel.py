"""podforge's own wheel, built by uv's backend from pyproject.toml (controller/tools.py)."""

from __future__ import annotations

import shutil
import zipfile
from email.parser import Parser
from pathlib import Path

import uv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from podforge.controller.tools import project, tool_requirements, tools_version, tools_wheel
from podforge.core.lock import lock_file
from podforge.core.stacks import STACK_PROFILES, TOOLS_LOCK, UV

REPO = Path(__file__).resolve().parents[2]


def metadata(wheel: Path) -> dict[str, list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode())
    return {key: message.get_all(key) or [] for key in ("Version", "Requires-Dist")}


def test_the_wheel_says_what_the_tools_need_and_carries_the_codes_hash(tmp_path):
    wheel = tools_wheel(uv.find_uv_bin(), tmp_path)
    assert wheel.name == f"podforge-{tools_version()}-py3-none-any.whl"
    found = metadata(wheel)
    assert found["Version"] == [tools_version()]

    def named(requirement: str) -> tuple[str, str]:
        parsed = Requirement(requirement)
        return canonicalize_name(parsed.name), str(parsed.specifier)

    pod_extra = [named(r.split(";")[0]) for r in found["Requires-Dist"] if "extra == 'pod'" in r]
    assert pod_extra == [named(r) for r in project()["optional-dependencies"]["pod"]]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "podforge/workflows/graph.py" in names and "podforge/cli.py" in names
    assert not any("__pycache__" in n or n.startswith(("tests/", "sandbox/")) for n in names)


def test_the_same_code_gives_the_same_bytes_and_other_code_another_version(tmp_path):
    first = tools_wheel(uv.find_uv_bin(), tmp_path / "a").read_bytes()
    assert tools_wheel(uv.find_uv_bin(), tmp_path / "b").read_bytes() == first
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "podforge", copy / "podforge", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", copy)
    (copy / "podforge" / "cli.py").write_text((REPO / "podforge/cli.py").read_text() + "\n# x\n")
    assert tools_version(copy) != tools_version()
    assert tools_wheel(uv.find_uv_bin(), tmp_path / "c", copy).name.endswith(
        f"{tools_version(copy)}-py3-none-any.whl"
    )


def test_the_tools_lock_alone_installs_the_tools_pyproject_lists():
    # One list (pyproject's dependencies and pod extra) feeds the tools' own lock; ComfyUI's
    # stacks no longer carry the tools.
    wanted = tool_requirements()
    assert UV in wanted  # the uv the pods install every lock with

    def tools_of(profile: str) -> list[str]:
        lines = (REPO / lock_file(profile)).read_text().splitlines()
        return [line.removeprefix("# input tool: ") for line in lines if "# input tool: " in line]

    assert tools_of(TOOLS_LOCK) == wanted
    for profile in STACK_PROFILES:
        assert not set(tools_of(profile)) & set(wanted), profile


def test_hosts_wanting_the_wheel_at_once_each_read_it_whole(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        wheels = list(pool.map(lambda _: tools_wheel(uv.find_uv_bin(), tmp_path), range(4)))
        sizes = list(pool.map(lambda wheel: len(wheel.read_bytes()), wheels))
    assert len(set(wheels)) == 1 and len(set(sizes)) == 1 and sizes[0] > 0
    assert [p.name for p in tmp_path.iterdir()] == [wheels[0].name]  # no stage left behind
