"""Model files: the manifest, and the pod-side fetcher when the fact says files are missing,
started right after the stack's sync (it takes the link once the stack's downloads are done)
and awaited after the services: the bytes arrive while ComfyUI, its nodes and the stack
install. The boot phase does not wait: start.sh follows the fetch while supervisord's
programs serve."""

from __future__ import annotations

import json
import re
import shlex
import uuid
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, python, server

from operations import pod_files
from podforge.core.config import Settings
from podforge.core.plan import Plan
from podforge.core.services import boot_fetch, manifest_path, secrets_dir
from podforge.pod import stamps
from tasks.desired import Pod
from tasks.streamed import run_streamed


@dataclass
class Fetch:
    """A model fetch this deploy runs, and the bytes it brought once done."""

    job: str | None = None  # its job directory on the pod (podforge job)
    manifest: str = ""
    count: int = 0  # files missing when it started
    fetched_bytes: int | None = None  # from the fetcher's summary line, after it ran
    fetch_seconds: float | None = None  # how long those bytes took (the same line)

    def read_summary(self, lines: list[str]) -> None:
        for line in lines:
            found = FETCH_SUMMARY.match(line)
            if found:
                self.fetched_bytes = int(found["bytes"])
                self.fetch_seconds = float(found["seconds"])


# Each host's model fetch in this run (none: every file was in place), for the per-pod
# report of python -m fleet rollout.
FETCHES: dict[str, Fetch] = {}

# The fetcher's last line (podforge/cli.py):
# "fetch: 3 fetched (123 bytes in 0.4 s), 2 already in place"
FETCH_SUMMARY = re.compile(r"^fetch: \d+ fetched \((?P<bytes>\d+) bytes in (?P<seconds>[\d.]+) s\)")


@deploy("Models")
def start(settings: Settings, plan: Plan, pod: Pod, after_stack: str | None) -> None:
    """The manifest, the tokens, and the fetch of what is missing, started in the background
    (``podforge job``): it runs while the rest of the deploy installs; ``wait`` awaits it.
    ``after_stack``: the stack's sync job, whose downloads go first (ComfyUI can start once
    its stack is in; the fetch takes the link while the stack unpacks and compiles)."""
    manifest = [model.model_dump(mode="json") for model in plan.models]
    pod_files.content(
        name=f"Model manifest ({len(manifest)} files, {plan.total_bytes / 1e9:.1f} GB planned)",
        dest=manifest_path(settings),
        text=json.dumps(manifest, indent=2, sort_keys=True) + "\n",
        digests=pod.files,
    )
    # The fetcher reads tokens from 0600 files (never its command line), uploaded, then
    # chmod-ed: the secrets directory (0700, made before any task writes) keeps them
    # unreadable meanwhile.
    secrets = secrets_dir(settings)
    token_files = {
        "HF_TOKEN_FILE": (f"{secrets}/hf_token", "Hugging Face token", settings.hf_token),
        "CIVITAI_TOKEN_FILE": (f"{secrets}/civitai_token", "CivitAI token", settings.civitai_token),
    }
    for path, label, token in token_files.values():
        if token is not None:
            pod_files.content(
                name=f"{label} (0600)",
                dest=path,
                text=token.get_secret_value(),
                digests=pod.files,
                mode="600",
            )
    missing = [
        m
        for m in plan.models
        if not stamps.is_current(pod.models[m.dest], m.bytes, m.sha256, m.source_id)
    ]
    if not missing:
        # This run fetches nothing: an earlier run's entry (one process may deploy again, as
        # the fleet and the sandbox do) must not be reported as this run's bytes.
        FETCHES.pop(host.name, None)
        host.noop(f"all {len(plan.models)} model files are in place and verified")
        if settings.phase == "boot":
            files.link(
                name="No model fetch for start.sh to follow",
                path=boot_fetch(settings),
                present=False,
            )
        return
    # A directory of its own: a job an interrupted deploy left running never writes here.
    job = f"{settings.podforge_dir}/jobs/fetch-{uuid.uuid4().hex[:12]}"
    FETCHES[host.name] = Fetch(job=job, manifest=manifest_path(settings), count=len(missing))
    environment = {
        "HF_ENDPOINT": settings.hf_endpoint,
        "CIVITAI_ENDPOINT": settings.civitai_endpoint,
        # A token not set is no file: the fetcher goes without it.
        **{name: path for name, (path, _, token) in token_files.items() if token is not None},
    }
    tools = f"{settings.tools_dir}/bin/podforge"
    fetch = [
        tools,
        "fetch",
        manifest_path(settings),
        "--models-dir",
        settings.models_dir,
        "--concurrency",
        str(settings.fetch_concurrency),
        "--connections",
        str(settings.fetch_connections),
        *(["--staging", settings.models_staging_dir] if settings.models_staging_dir else []),
    ]
    # An assignment's name must stay unquoted: only the values are.
    commands = [
        " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
        + " "
        + shlex.join(
            [
                tools,
                "job",
                "start",
                *(["--after-downloads", after_stack] if after_stack else []),
                job,
                "--",
                *fetch,
            ]
        )
    ]
    if settings.phase == "boot":
        # start.sh follows the fetch through this link while supervisord's programs serve.
        commands.append(shlex.join(["ln", "-sfn", job, boot_fetch(settings)]))
    server.shell(
        name=f"Start fetching {len(missing)} missing model files (in the background)",
        commands=commands,
    )


@deploy("Models")
def wait(settings: Settings, plan: Plan, pod: Pod) -> None:
    """The fetch ``start`` began: its lines (and how many files are in) until it ends; its
    failure fails the host with the fetcher's own message."""
    fetch = FETCHES.get(host.name)
    if fetch is None or fetch.job is None:
        return
    if settings.phase == "boot":
        host.noop("start.sh follows the model fetch while ComfyUI serves")
        return
    python.call(
        name=f"Fetch {fetch.count} missing model files",
        function=run_streamed,
        on_success=fetch.read_summary,
        failure="the model fetcher failed: see its FAILED lines above",
        command=shlex.join(
            [
                f"{settings.tools_dir}/bin/podforge",
                "job",
                "wait",
                fetch.job,
                "--manifest",
                fetch.manifest,
            ]
        )
        + " 2>&1",
    )
