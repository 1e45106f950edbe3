"""The wheelhouse's keys and entries (podforge/core/wheelhouse.py): plain tables."""

from __future__ import annotations

import pytest

from podforge.core.wheelhouse import BuildKey, WheelEntry, WheelhouseError, WheelSpec

TORCH = {"torch": "2.5.1"}


@pytest.mark.parametrize(
    ("environment", "kernels"),
    [
        ({"MMCV_WITH_OPS": "1"}, "cpu"),
        ({"MMCV_WITH_OPS": "1", "TORCH_CUDA_ARCH_LIST": "8.0;8.6;9.0"}, "sm80.86.90"),
        ({"TORCH_CUDA_ARCH_LIST": "7.5 8.9"}, "sm75.89"),
    ],
)
def test_the_label_names_python_machine_torch_and_kernels(environment, kernels):
    key = BuildKey.of("cp311", "x86_64", TORCH, environment)
    assert key.kernels == kernels
    assert key.label.startswith(f"cp311-x86_64-torch2.5.1-{kernels}-")


def test_every_part_of_the_build_is_in_the_key():
    base = BuildKey.of("cp311", "x86_64", TORCH, {"MMCV_WITH_OPS": "1"})
    others = [
        BuildKey.of("cp312", "x86_64", TORCH, {"MMCV_WITH_OPS": "1"}),
        BuildKey.of("cp311", "aarch64", TORCH, {"MMCV_WITH_OPS": "1"}),
        BuildKey.of("cp311", "x86_64", {"torch": "2.8.0"}, {"MMCV_WITH_OPS": "1"}),
        BuildKey.of("cp311", "x86_64", TORCH, {"MMCV_WITH_OPS": "0"}),
        BuildKey.of("cp311", "x86_64", TORCH, {}),
    ]
    labels = {base.label, *(key.label for key in others)}
    assert len(labels) == 1 + len(others)
    # The same build, said in another order, is the same key.
    same = BuildKey.of("cp311", "x86_64", {"Torch": "2.5.1"}, {"MMCV_WITH_OPS": "1"})
    assert same.label == base.label


@pytest.mark.parametrize(
    ("python", "machine", "against", "environment", "named"),
    [
        ("../cp311", "x86_64", TORCH, {}, "the Python tag"),
        ("cp311", "x86_64/../..", TORCH, {}, "the machine"),
        ("cp311", "x86_64", {"torch": "2.5.1/../../etc"}, {}, "torch's version"),
        ("cp311", "x86_64", {"to rch": "1"}, {}, "a distribution"),
        ("cp311", "x86_64", TORCH, {"lower": "1"}, "build variable 'lower'"),
        ("cp311", "x86_64", TORCH, {"A": "x\ny"}, "build variable A"),
    ],
)
def test_hostile_parts_of_a_key_are_refused_by_name(python, machine, against, environment, named):
    with pytest.raises(WheelhouseError, match=named):
        BuildKey.of(python, machine, against, environment)


def test_an_entry_reads_back_and_names_its_wheel_by_hash():
    entry = WheelEntry("mmcv", "2.1.0", "cp311-x86_64-torch2.5.1-cpu-0a1b2c3d",
                       "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl", "ab" * 32)  # fmt: skip
    assert WheelEntry.from_json(entry.to_json(), "entry.json") == entry
    assert entry.sync_line("/workspace/.cache/podforge/wheelhouse") == (
        "mmcv @ file:///workspace/.cache/podforge/wheelhouse/mmcv/2.1.0/"
        "cp311-x86_64-torch2.5.1-cpu-0a1b2c3d/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
        f" --hash=sha256:{'ab' * 32}"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not a wheelhouse entry"),
        ('{"name": "mmcv"}', "not a wheelhouse entry"),
        (
            '{"name": "m", "version": "1", "label": "l", "wheel": "../x.whl", "sha256": "'
            + "a" * 64
            + '"}',
            "not a wheel's file name",
        ),  # fmt: skip
        (
            '{"name": "m", "version": "1", "label": "l", "wheel": "x.whl", "sha256": "abc"}',
            "not 64 hex digits",
        ),  # fmt: skip
    ],
)
def test_an_entry_that_is_not_one_is_refused_naming_where_it_was_read(text, why):
    with pytest.raises(WheelhouseError, match=why):
        WheelEntry.from_json(text, "wheelhouse/mmcv/2.1.0/x/entry.json")


@pytest.mark.parametrize(
    ("source", "sha256", "why"),
    [
        ("http://example.com/mmcv-2.1.0.tar.gz", "a" * 64, "https:// or file:///"),
        ("https://files.pythonhosted.org/mmcv-2.1.0.tar.gz", "xyz", "not 64 hex"),
    ],
)
def test_a_spec_names_its_source_by_https_or_file_and_its_hash(source, sha256, why):
    with pytest.raises(WheelhouseError, match=why):
        WheelSpec("mmcv", "2.1.0", source, sha256)


def test_a_release_asset_is_keyed_as_prebuilt_and_may_come_unpinned():
    key = BuildKey.of("cp311", "x86_64", TORCH, {}, prebuilt=True)
    assert key.label.startswith("cp311-x86_64-torch2.5.1-prebuilt-")
    assert key.label != BuildKey.of("cp311", "x86_64", TORCH, {}).label
    asset = "https://github.com/o/r/releases/download/v1/flash_attn-1.0+cu12-cp311-cp311-linux_x86_64.whl"
    assert WheelSpec("flash-attn", "1.0", asset, None).prebuilt
    # An sdist is built and run on the pod: it comes pinned, or not at all.
    with pytest.raises(WheelhouseError, match="is an sdist: its sha256 must be pinned"):
        WheelSpec("mmcv", "2.1.0", "https://files.pythonhosted.org/mmcv-2.1.0.tar.gz", None)
    with pytest.raises(WheelhouseError, match="does not end in a file name"):
        WheelSpec("mmcv", "2.1.0", "https://files.pythonhosted.org/a/", "a" * 64)
