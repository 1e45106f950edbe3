"""The account's pods from RunPod's REST API v2, as SSH endpoints pyinfra can deploy to.

``GET {RUNPOD_API_URL}/v2/pods`` with a bearer token returns ``{"pods": [...]}`` (all pods
of the account: v2's listPods takes no paging parameters). Only a RUNNING pod with a direct
SSH endpoint (``ssh.direct``: its public IP and the public port mapped to 22) can be
deployed: RunPod's SSH proxy has neither SFTP nor SCP, which pyinfra needs. Every other pod
is skipped with one line saying why. REST v1 is retired and GraphQL deprecated
(docs/facts.md#runpod).
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

from podforge.core.errors import PodforgeError

DEFAULT_API_URL = "https://api.runpod.io"
# A 429's Retry-After is honoured this many times, and only when short enough to wait for.
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_MAX_WAIT_S = 60.0


class RunPodApiError(PodforgeError, RuntimeError):
    """The API could not be asked or answered unusably; the message is one line for people."""


@dataclass(frozen=True)
class FleetPod:
    id: str
    name: str
    address: str  # public IP of ssh.direct
    port: int  # public port mapped to the pod's 22
    user: str
    gpu_type: str | None
    gpu_count: int

    def host_data(self) -> dict[str, Any]:
        return {
            "ssh_hostname": self.address,
            "ssh_port": self.port,
            "ssh_user": self.user,
            "pod_name": self.name,
            "runpod_id": self.id,
            "runpod_gpu_type": self.gpu_type,
            "runpod_gpu_count": self.gpu_count,
        }


def deployable_pods(
    body: object, name_filter: str | None = None
) -> tuple[list[FleetPod], list[str]]:
    """Pods to deploy to, and one line per pod skipped (with why), from a v2 listPods body."""
    if not isinstance(body, dict) or not isinstance(body.get("pods"), list):
        raise RunPodApiError('RunPod API answered without a "pods" list: not a v2 listPods answer')
    pods: list[FleetPod] = []
    skipped: list[str] = []
    for entry in body["pods"]:
        label = f"{entry.get('name') or '(unnamed)'} ({entry.get('id')})"
        if name_filter and not fnmatch.fnmatchcase(entry.get("name") or "", name_filter):
            continue
        reason = _not_deployable(entry)
        if reason:
            skipped.append(f"skipped {label}: {reason}")
            continue
        direct = entry["ssh"]["direct"]
        gpu = entry.get("gpu") or {}
        pods.append(
            FleetPod(
                id=str(entry["id"]),
                name=entry.get("name") or str(entry["id"]),
                address=str(direct["host"]),
                port=int(direct["port"]),
                user=direct.get("username") or "root",
                gpu_type=gpu.get("id"),
                gpu_count=int(gpu.get("count") or 0),
            )
        )
    return pods, skipped


def _not_deployable(pod: dict[str, Any]) -> str | None:
    status = pod.get("status")
    if status in ("PROVISIONING", "STARTING"):
        return f"{status.lower()}, not running yet; deploy again once it runs"
    if status != "RUNNING":
        return f"{status}, not running; start it to deploy to it"
    direct = (pod.get("ssh") or {}).get("direct")
    if direct and direct.get("host") and direct.get("port"):
        return None
    if not (pod.get("runtime") or {}).get("ports"):
        return "starting: no public port mapped yet; deploy again in a minute"
    return (
        "only RunPod's SSH proxy, which has no SFTP/SCP (pyinfra needs them): "
        "expose TCP port 22 on the pod for full SSH"
    )


def host_names(pods: list[FleetPod]) -> list[str]:
    """pyinfra host names: the pod's name, with its id where names repeat."""
    counts = Counter(pod.name for pod in pods)
    return [pod.name if counts[pod.name] == 1 else f"{pod.name}-{pod.id}" for pod in pods]


def list_pods(api_url: str, api_key: str, timeout: float = 20.0) -> dict[str, Any]:
    """The decoded answer of GET {api_url}/v2/pods, or RunPodApiError saying what went wrong."""
    url = f"{api_url.rstrip('/')}/v2/pods"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    )
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
            break
        except urllib.error.HTTPError as error:
            wait = _retry_after(error)
            waitable = wait is not None and wait <= RATE_LIMIT_MAX_WAIT_S
            if error.code == 429 and waitable and attempt < RATE_LIMIT_RETRIES:
                print(f"RunPod API rate limit: asking again in {wait:g} s", file=sys.stderr)
                time.sleep(wait)
                continue
            raise RunPodApiError(_http_problem(url, error, wait)) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise RunPodApiError(_silent(url, timeout)) from None
            raise RunPodApiError(f"RunPod API at {url} unreachable: {error.reason}") from None
        except TimeoutError:
            raise RunPodApiError(_silent(url, timeout)) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise RunPodApiError(
            f"RunPod API at {url} answered with a body that is not JSON "
            f"(starts {raw[:40]!r}); is RUNPOD_API_URL right?"
        ) from None


def _silent(url: str, timeout: float) -> str:
    return f"RunPod API at {url} did not answer within {timeout:g} s; try again later"


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    if value is None or not value.strip().isdigit():
        return None
    return float(value)


def _http_problem(url: str, error: urllib.error.HTTPError, retry_after: float | None) -> str:
    """One line from an RFC 9457 problem+json answer (title, detail) and what to do."""
    try:
        problem = json.loads(error.read() or b"{}")
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    said = ": ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k))
    said = f" ({said})" if said else ""
    fixes = {
        401: "check RUNPOD_API_KEY",
        403: "the key lacks access to pods: give it read access to pods in RunPod's settings",
        429: "rate limited: "
        + (f"retry after {retry_after:g} s" if retry_after else "retry in a minute"),
    }
    fix = fixes.get(error.code, "RunPod's side failed; try again later")
    return f"RunPod API at {url} answered {error.code}{said}: {fix}"
