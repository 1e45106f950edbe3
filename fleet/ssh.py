"""SSH keepalives on the connection pyinfra holds to a pod."""

from __future__ import annotations

from pyinfra import host
from pyinfra.connectors.ssh import SSHConnector

# Seconds between keepalives: well under the minutes after which NATs and cloud load
# balancers drop an idle TCP connection.
KEEPALIVE_S = 30


def keep_alive() -> None:
    """Send keepalives on this pod's SSH connection while it waits.

    pyinfra runs each operation on every pod before the next: while one pod fetches
    20 GB, the others' connections sit idle, and an idle connection dropped by the network
    fails that pod. pyinfra has no option for this; paramiko's transport does. The interval
    can be set per host with the host data ``ssh_keepalive_s``.
    """
    if not isinstance(host.connector, SSHConnector):
        return  # @local, @docker, @chroot: no network connection to keep open
    transport = host.connector.client.get_transport()
    transport.set_keepalive(int(host.data.get("ssh_keepalive_s") or KEEPALIVE_S))
