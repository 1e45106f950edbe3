"""RunPod API v2 pod entries in the documented shape (docs/facts.md#runpod), for tests."""

from __future__ import annotations

from typing import Any


def v2_pod(
    pod_id: str,
    name: str,
    status: str = "RUNNING",
    direct: tuple[str, int] | None = ("203.0.113.7", 22077),
    ports: bool = True,
    gpu: str = "NVIDIA GeForce RTX 4090",
    count: int = 1,
) -> dict[str, Any]:
    """One pod of `GET /v2/pods`: with full SSH (``direct``), the proxy only, or no ports."""
    ip, port = direct or ("203.0.113.7", 0)
    proxy_user = f"{pod_id}-64410f3a"
    return {
        "id": pod_id,
        "name": name,
        "status": status,
        "gpu": {"id": gpu, "count": count},
        "runtime": {
            "ports": [
                *([{"private": 22, "public": port, "type": "tcp", "ip": ip}] if direct else []),
                {"private": 8188, "public": 8188, "type": "http", "ip": "100.65.0.12"},
            ]
            if ports
            else []
        },
        "ssh": {
            "proxy": {
                "host": "ssh.runpod.io",
                "port": 22,
                "username": proxy_user,
                "command": f"ssh {proxy_user}@ssh.runpod.io -i ~/.ssh/id_ed25519",
            },
            "direct": {
                "host": ip,
                "port": port,
                "username": "root",
                "command": f"ssh root@{ip} -p {port} -i ~/.ssh/id_ed25519",
            }
            if direct
            else None,
        },
    }
