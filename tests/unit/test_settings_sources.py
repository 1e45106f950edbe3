"""The one settings loader and the one secret reader (podforge/settings.py, secrets.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podforge.core.config import SettingsError
from podforge.secrets import SecretFileError, env_file, secret
from podforge.settings import load, saved_settings_paths

REPO = Path(__file__).resolve().parents[2]


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_secret_is_the_variable_or_its_0600_file(tmp_path):
    token = private(tmp_path / "token", "hf_from_file\n")
    assert secret("HF_TOKEN", {"HF_TOKEN": "hf_plain"}) == "hf_plain"
    assert secret("HF_TOKEN", {"HF_TOKEN_FILE": str(token)}) == "hf_from_file"
    # The file wins: it is how the deploy hands a token to the pod's programs.
    assert secret("HF_TOKEN", {"HF_TOKEN": "x", "HF_TOKEN_FILE": str(token)}) == "hf_from_file"
    assert secret("HF_TOKEN", {}) is None
    assert secret("HF_TOKEN", {"HF_TOKEN": ""}) is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_file_others_may_read_is_refused_naming_it_and_the_fix(tmp_path, mode):
    token = private(tmp_path / "token", "hf_leaked", mode)
    with pytest.raises(SecretFileError) as refused:
        secret("HF_TOKEN", {"HF_TOKEN_FILE": str(token)})
    message = str(refused.value)
    assert f"HF_TOKEN_FILE {token} is readable by others (mode {mode:04o})" in message
    assert f"chmod 600 {token}" in message and "hf_leaked" not in message


def test_a_missing_secret_file_is_named(tmp_path):
    with pytest.raises(SecretFileError, match=r"R2_ENV_FILE .*/nope cannot be read: No such"):
        env_file(tmp_path / "nope", "R2_ENV_FILE")


def test_an_env_file_reads_shell_assignments(tmp_path):
    path = private(tmp_path / "r2.env", "# R2\nexport R2_BUCKET='b'\nR2_ENDPOINT=\"https://e\"\n\n")
    assert env_file(path, "R2_ENV_FILE") == {"R2_BUCKET": "b", "R2_ENDPOINT": "https://e"}


def test_the_sources_layer_group_data_saved_data_environment(tmp_path):
    public, secrets = (tmp_path / p for p in saved_settings_paths(str(tmp_path)))
    secrets.parent.mkdir()
    public.write_text(json.dumps({"comfyui_port": 8190, "comfyui_dir": "/saved/ComfyUI"}))
    private(secrets, json.dumps({"hf_token": "hf_saved"}))
    token = private(tmp_path / "civitai", "civitai_from_file")
    settings = load(
        {"comfyui_port": 8191},
        {"COMFYUI_DIR": "/env/ComfyUI", "CIVITAI_TOKEN_FILE": str(token)},
        saved_in=str(tmp_path),
    )
    assert settings.comfyui_port == 8191  # data over the saved settings
    assert settings.comfyui_dir == "/env/ComfyUI"  # the environment over both
    assert settings.hf_token.get_secret_value() == "hf_saved"
    assert settings.civitai_token.get_secret_value() == "civitai_from_file"
    assert load({}, {}, with_group_data=True).phase == "pod"  # group_data/all.py


def test_saved_secrets_others_may_read_are_refused(tmp_path):
    public, secrets = (tmp_path / p for p in saved_settings_paths(str(tmp_path)))
    secrets.parent.mkdir()
    private(secrets, json.dumps({"hf_token": "hf_saved"}), 0o644)
    with pytest.raises(SecretFileError, match=r"the saved secret settings .*\(chmod 600 "):
        load({}, {}, saved_in=str(tmp_path))


def test_a_bad_setting_is_named_by_its_source():
    with pytest.raises(SettingsError, match="COMFYUI_PORT"):
        load({}, {"COMFYUI_PORT": "eighty"})


def test_podforge_fetch_refuses_a_readable_token_file_without_a_traceback(tmp_path):
    token = private(tmp_path / "token", "hf_leaked", 0o644)
    manifest = tmp_path / "manifest.json"
    manifest.write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "podforge", "fetch", str(manifest)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_TOKEN_FILE": str(token)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"podforge fetch: HF_TOKEN_FILE {token} is readable by others")
    assert "Traceback" not in done.stderr and "hf_leaked" not in done.stderr
