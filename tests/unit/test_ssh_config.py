"""fleet/ssh.py: the ssh_config the inventories give pods, read by paramiko as pyinfra does."""

from __future__ import annotations

import io
import stat

from paramiko import SSHConfig

from fleet.ssh import KEEPALIVE_S, config_file, keepalive_config


def _lookup(text: str, host: str) -> dict[str, str]:
    config = SSHConfig()
    config.parse(io.StringIO(text))
    return dict(config.lookup(host))


def test_every_pod_gets_the_default_keepalive():
    assert _lookup(keepalive_config(""), "203.0.113.7")["serveraliveinterval"] == str(KEEPALIVE_S)


def test_the_users_own_settings_stay_and_their_interval_wins():
    user = "Host pod-a\n    User ubuntu\n    ServerAliveInterval 5\nHost *\n    Compression yes\n"
    text = keepalive_config(user)
    assert _lookup(text, "pod-a")["serveraliveinterval"] == "5"
    assert _lookup(text, "pod-a")["user"] == "ubuntu"
    assert _lookup(text, "pod-b")["serveraliveinterval"] == str(KEEPALIVE_S)
    assert _lookup(text, "pod-b")["compression"] == "yes"


def test_the_file_is_written_private_with_the_users_config_in_it(tmp_path):
    user = tmp_path / "config"
    user.write_text("Host pod-a\n    Port 2200\n")
    path = config_file(tmp_path / "podforge" / "ssh_config", user)
    assert stat.S_IMODE((tmp_path / "podforge" / "ssh_config").stat().st_mode) == 0o600
    text = open(path).read()
    assert _lookup(text, "pod-a")["port"] == "2200"
    assert _lookup(text, "pod-a")["serveraliveinterval"] == str(KEEPALIVE_S)
