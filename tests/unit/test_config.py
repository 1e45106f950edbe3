"""Every config error path: one line naming the variable, the value and what it accepts."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import BaseModel

from podforge.core.config import (
    JSON_SETTINGS,
    Settings,
    SettingsError,
    as_environment,
    load_settings,
    public_view,
)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"STEADYDANCER_VARIANT": "fp32"},
            "STEADYDANCER_VARIANT='fp32' is not accepted: expected one of auto, fp16, fp8 or gguf",
        ),
        ({"STEADYDANCER_GGUF_MODEL": "q9"}, "STEADYDANCER_GGUF_MODEL='q9' is not accepted"),
        (
            {"STEADYDANCER_GUIDE_SCALE": "40"},
            "STEADYDANCER_GUIDE_SCALE='40' is not accepted: expected a number from 1.0 to 10.0",
        ),
        ({"STEADYDANCER_GUIDE_SCALE": "0.5"}, "expected a number from 1.0 to 10.0"),
        ({"STEADYDANCER_CONDITION_GUIDE": "2.5"}, "expected a number from 0.1 to 2.0"),
        ({"STEADYDANCER_END_CFG": "0"}, "expected a number from 0.1 to 1.0"),
        ({"STEADYDANCER_SEED": "abc"}, "STEADYDANCER_SEED='abc' is not accepted"),
        ({"STEADYDANCER_GPU_MEMORY_MODE": "medium"}, "expected one of auto, full"),
        ({"GPU_MEMORY_MODE": "lots"}, "GPU_MEMORY_MODE='lots'"),
        ({"GPU_TIER": "enthusiast"}, "expected one of auto, consumer, prosumer or datacenter"),
        ({"ENABLE_STEADYDANCER": "maybe"}, "expected true or false"),
        ({"ENABLE_TURBODIFFUSION": "2"}, "ENABLE_TURBODIFFUSION='2'"),
        ({"ENABLE_QWEN_EDIT": "si"}, "ENABLE_QWEN_EDIT"),
        ({"ENABLE_WAN22": "x"}, "ENABLE_WAN22"),
        ({"ENABLE_DWPOSE": "x"}, "ENABLE_DWPOSE"),
        ({"ENABLE_R2_SYNC": "x"}, "ENABLE_R2_SYNC"),
        ({"QWEN_EDIT_MODEL": "Q9_X"}, "QWEN_EDIT_MODEL='Q9_X' is not accepted"),
        ({"COMFYUI_ARGS": "--medvram"}, "unknown ComfyUI flag '--medvram'"),
        ({"COMFYUI_ARGS": "--cpu-text-encoder"}, "unknown ComfyUI flag '--cpu-text-encoder'"),
        ({"COMFYUI_ARGS": "--lowvram --highvram"}, "mutually exclusive"),
        ({"COMFYUI_ARGS": "--port 9000"}, "use COMFYUI_PORT instead"),
        ({"COMFYUI_ARGS": "--listen 0.0.0.0"}, "use COMFYUI_LISTEN instead"),
        ({"COMFYUI_ARGS": "--reserve-vram"}, "needs a value"),
        ({"COMFYUI_ARGS": "--reserve-vram lots"}, "takes a number of GB"),
        ({"COMFYUI_PORT": "80"}, "expected a number from 1024 to 55000"),
        (
            {"R2_ENDPOINT": "r2.example"},
            "R2_ENDPOINT='r2.example' is not accepted: expected an https:// URL (plain http only to"
            " localhost)",
        ),
        ({"STACK_PROFILE": "torch24"}, "expected one of auto, torch25-cu124 or torch28-cu128"),
        ({"PHASE": "build"}, "PHASE='build'"),
    ],
)
def test_bad_environment_values(env, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_bad_host_data_names_the_data_key():
    with pytest.raises(SettingsError, match=r"^steadydancer_variant \(host data\)='fp32'"):
        load_settings({"steadydancer_variant": "fp32"}, {})


def test_bad_custom_model_names_the_field():
    with pytest.raises(SettingsError, match="custom_models"):
        load_settings({"custom_models": [{"repo": "a/b", "path": "x"}]}, {})


def test_environment_wins_over_host_data_and_data_over_defaults():
    settings = load_settings(
        {"steadydancer_variant": "fp16", "models_dir": "/data/models", "ssh_user": "root"},
        {"STEADYDANCER_VARIANT": "gguf", "STEADYDANCER_GGUF_MODEL": "Q6_K"},
    )
    assert settings.steadydancer_variant == "gguf"
    assert settings.steadydancer_gguf_model == "q6_k"
    assert settings.models_dir == "/data/models"
    assert settings.comfyui_port == 8188


def test_empty_environment_value_means_unset():
    assert load_settings({"gpu_tier": "consumer"}, {"GPU_TIER": ""}).gpu_tier == "consumer"


def test_defaults():
    settings = Settings()
    assert settings.models_dir == "/workspace/ComfyUI/models"
    assert (settings.comfyui_listen, settings.comfyui_port) == ("0.0.0.0", 8188)
    assert settings.steadydancer_variant == "auto"


SECRET = "hf_SuperSecretToken123"


def test_secrets_never_appear_in_errors_or_views():
    settings = load_settings({}, {"HF_TOKEN": SECRET, "R2_SECRET_ACCESS_KEY": SECRET})
    assert settings.hf_token is not None
    assert settings.hf_token.get_secret_value() == SECRET
    for shown in (repr(settings), str(settings), str(public_view(settings))):
        assert SECRET not in shown
    assert public_view(settings)["hf_token_set"] is True
    with pytest.raises(SettingsError) as caught:
        load_settings({"hf_token": ["not", "a", SECRET]}, {})
    assert SECRET not in str(caught.value)
    assert "<hidden>" in str(caught.value)


def test_structured_settings_come_from_the_environment_as_json():
    # How a Dockerfile's build arguments pass pins: the same objects as group_data, as JSON.
    node = {"name": "ComfyUI-GGUF", "url": "git://127.0.0.1:9418/g.git", "commit": "a" * 40}
    settings = load_settings({}, {"CUSTOM_NODES": json.dumps([node])})
    assert [pin.model_dump() for pin in settings.custom_nodes] == [node]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CUSTOM_NODES": "ComfyUI-GGUF"}, "CUSTOM_NODES is not JSON (Expecting value"),
        (
            {
                "COMFYUI_REPO": json.dumps(
                    {"name": "ComfyUI", "url": "https://x.example/c", "commit": "main"}
                )
            },
            "COMFYUI_REPO.commit='main' is not accepted",
        ),
    ],
)
def test_bad_structured_environment_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_as_environment_read_back_the_same():
    pins = [{"name": "ComfyUI-GGUF", "url": "git://127.0.0.1/g.git", "commit": "b" * 40}]
    values = {
        "custom_nodes": pins,
        "enable_steadydancer": True,
        "steadydancer_guide_scale": 6.5,
        "comfyui_args": "--reserve-vram 2",
        "models_dir": "/workspace/models",
        "flash_attn_sha256": {"flash_attn-1.0+cu12-cp311-cp311-linux_x86_64.whl": "a" * 64},
    }
    environment = as_environment(values)
    assert environment["ENABLE_STEADYDANCER"] == "true"
    assert load_settings({}, environment) == load_settings(values, {})
    with pytest.raises(SettingsError, match="gpu_vram is not a setting"):
        as_environment({"gpu_vram": 16})


def test_every_object_setting_travels_as_json():
    # A dict or a model written with str() would come back as Python's repr, not read.
    def structured(annotation: object) -> bool:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is dict:
            return True
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return True
        return any(structured(a) for a in inner)

    objects = {name for name, f in Settings.model_fields.items() if structured(f.annotation)}
    assert "flash_attn_sha256" in objects and "custom_nodes" in objects
    assert objects <= JSON_SETTINGS


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (
            {"dest": "loras/a"},
            r"custom_models\[0\] \(host data\)=\{...\} is not accepted: name one source",
        ),
        (
            {"civitai": 5, "url": "https://a.example/x", "dest": "a"},
            "name one source: .* \\(found civitai and url\\)",
        ),
        ({"repo": "me/loras", "dest": "a"}, "needs both repo and path"),
        ({"file": "a.zip", "url": "https://a.example/x", "dest": "a"}, "set civitai too"),
        (
            {"civitai": 0, "dest": "a"},
            r"custom_models\[0\]\.civitai \(host data\)=0 is not accepted",
        ),
        (
            {"url": "http://models.example/a?token=s3cret", "dest": "a"},
            r"custom_models\[0\]\.url \(host data\)='http://models.example/a' is not accepted: "
            r"expected "
            r"an https:// URL",
        ),
        ({"url": "https://a.example/x", "sha256": "abc", "dest": "a"}, "64 hexadecimal"),
    ],
)
def test_a_bad_model_source_is_named_by_entry_and_field_without_its_secrets(entry, says):
    with pytest.raises(SettingsError, match=says) as raised:
        load_settings({"custom_models": [entry]}, {})
    assert "s3cret" not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_custom_models_from_the_environment_name_each_source():
    value = '[{"civitai": 12, "file": "b.zip", "dest": "loras/b.zip"}]'
    settings = load_settings({}, {"CUSTOM_MODELS": value})
    (model,) = settings.custom_models
    assert (model.kind, model.label) == ("civitai", "CivitAI model version 12, b.zip")
