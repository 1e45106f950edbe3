"""SSH keepalives on the connections pyinfra holds to pods, set through an ssh_config file.

pyinfra runs each operation on every pod before the next: while one pod fetches 20 GB, the
others' connections sit idle, and an idle connection dropped by a NAT or a cloud load
balancer fails that pod. pyinfra honours ``ServerAliveInterval`` in the ssh_config it reads
(host data ``ssh_config_file``, by default ~/.ssh/config), so the inventories point it at a
copy of yours with a default interval added last: a value you set there wins.
"""

from __future__ import annotations

from pathlib import Path

# Seconds between keepalives: well under the minutes after which NATs and cloud load
# balancers drop an idle TCP connection.
KEEPALIVE_S = 30
USER_CONFIG = Path("~/.ssh/config").expanduser()
CONFIG_PATH = Path(".podforge/ssh_config")


def keepalive_config(user_config: str, interval_s: int = KEEPALIVE_S) -> str:
    """The user's ssh_config with a keepalive for every host after it (ssh_config takes the
    first value it finds for a host, so the user's own ServerAliveInterval wins)."""
    ours = f"# podforge (fleet/ssh.py): keepalives\nHost *\n    ServerAliveInterval {interval_s}\n"
    return f"{user_config.rstrip()}\n\n{ours}" if user_config.strip() else ours


def config_file(path: Path = CONFIG_PATH, user_config: Path = USER_CONFIG) -> str:
    """Writes the keepalive config (0600, like ~/.ssh/config) and returns its absolute path,
    the host data ``ssh_config_file`` of every pod of an inventory."""
    text = keepalive_config(user_config.read_text() if user_config.exists() else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return str(path.resolve())
