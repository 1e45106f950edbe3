"""podforge/core/auth.py: the credentials and what nginx reads of them."""

from __future__ import annotations

import base64
import hashlib

import pytest

from podforge.core.auth import Credentials
from podforge.core.config import SettingsError, load_settings


def test_the_users_file_holds_a_salted_sha1_nginx_checks_the_password_with():
    login = Credentials.of("comfy", "correct horse battery staple", None)
    user, _, hashed = login.users_file().strip().partition(":")
    assert user == "comfy" and hashed.startswith("{SSHA}")
    raw = base64.b64decode(hashed.removeprefix("{SSHA}"))
    digest, salt = raw[:20], raw[20:]
    assert digest == hashlib.sha1(b"correct horse battery staple" + salt).digest()
    assert digest != hashlib.sha1(b"wrong" + salt).digest()


def test_the_same_password_gives_the_same_files_and_another_changes_them():
    one = Credentials.of("comfy", "pw-1", None)
    assert one == Credentials.of("comfy", "pw-1", None)  # a deploy compares by digest
    other = Credentials.of("comfy", "pw-2", None)
    assert one.users_file() != other.users_file()
    assert one.token != other.token and len(one.token) >= 40  # derived from the password
    assert Credentials.of("comfy", "pw-1", "my-token").token == "my-token"
    assert one.token_map() == f'"Bearer {one.token}" off;\n'
    assert Credentials.parse(one.as_json()) == one


def test_a_token_without_a_password_is_refused_in_one_line():
    with pytest.raises(SettingsError, match="comfyui_api_token is set without") as raised:
        load_settings({"comfyui_api_token": "s3cret-token-0123456789"}, {})
    assert "s3cret-token" not in str(raised.value)
    with pytest.raises(SettingsError, match="comfyui_user"):
        load_settings({"comfyui_user": "no spaces allowed"}, {})
    assert load_settings({}, {"COMFYUI_AUTH": "off"}).comfyui_auth is False
