"""Where outputs land in the bucket: the layout, the pod's part of a key, numbered names."""

from __future__ import annotations

import pytest

from podforge.core.keys import (
    DEFAULT_LAYOUT,
    LayoutError,
    check_layout,
    index_key,
    numbered,
    object_key,
    pod_part,
)


def test_the_default_layout_names_the_pod_and_the_day():
    key = object_key(DEFAULT_LAYOUT, "k3x9rzq2", "2026-12-02", "video/ComfyUI_00001_.mp4")
    assert key == "outputs/k3x9rzq2/2026-12-02/video/ComfyUI_00001_.mp4"
    assert index_key(DEFAULT_LAYOUT, "k3x9rzq2", "2026-12-02") == (
        "outputs/k3x9rzq2/2026-12-02/metadata.json"
    )


@pytest.mark.parametrize(
    "layout",
    [
        "outputs/{day}/{path}",  # the old layout: a fleet collides
        "outputs/{pod}/{path}",
        "{pod}/{day}/{path}/x",
        "/outputs/{pod}/{day}/{path}",
        "outputs/{pod}/{day}/{path}/{path}",
        "outputs/{pod}/{day}/{user}/{path}",
        "outputs/{pod}/{day} /{path}",
    ],
)
def test_a_layout_without_pod_day_and_path_is_refused(layout):
    with pytest.raises(LayoutError):
        check_layout(layout)


def test_a_layout_may_move_the_parts():
    assert check_layout("renders/{day}/{pod}/{path}") == "renders/{day}/{pod}/{path}"


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("k3x9rzq2", "k3x9rzq2"),
        ("wan-1", "wan-1"),
        ("ComfyUI pod #2", "ComfyUI-pod-2"),
        ("../../x", "x"),
        ("a/b", "a-b"),
    ],
)
def test_a_pods_name_becomes_one_plain_part(name, part):
    assert pod_part(name) == part


def test_a_name_with_nothing_plain_is_refused():
    with pytest.raises(LayoutError, match="nothing to name the pod by"):
        pod_part("###")


@pytest.mark.parametrize(
    ("key", "number", "renamed"),
    [
        ("outputs/p/d/ComfyUI_00001_.png", 2, "outputs/p/d/ComfyUI_00001_ (2).png"),
        ("outputs/p/d/clip.tar.gz", 3, "outputs/p/d/clip.tar (3).gz"),
        ("outputs/p/d/noext", 2, "outputs/p/d/noext (2)"),
        ("outputs/p/d/.hidden", 2, "outputs/p/d/.hidden (2)"),
    ],
)
def test_a_taken_key_is_numbered_as_a_file_manager_names_a_copy(key, number, renamed):
    assert numbered(key, number) == renamed
