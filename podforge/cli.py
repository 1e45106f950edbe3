"""Pod-side command line: ``python -m podforge plan`` and ``python -m podforge fetch``.

Runs on the pod itself, without pyinfra: settings come from the environment and
``--data key=value``, GPUs from the nvidia-smi on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from podforge.core.stacks import DEFAULT_STACK, STACK_FEATURES, STACK_PROFILES, TOOLS_LOCK
from podforge.secrets import SecretFileError, secret


def _plan(args: argparse.Namespace) -> int:
    # Imported here: pydantic costs about 0.2 s at start that `fetch` should not pay.
    from podforge.core.config import SettingsError
    from podforge.core.errors import PodforgeError
    from podforge.core.gpu import PROBE_COMMAND, parse_probe
    from podforge.core.plan import build_plan
    from podforge.settings import load

    try:
        data = {}
        for pair in args.data:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise SettingsError(f"--data {pair!r} is not accepted: expected key=value")
            data[key] = value
        settings = load(data)
        probe = subprocess.run(
            ["sh", "-c", PROBE_COMMAND], capture_output=True, text=True, check=True
        )
        plan = build_plan(
            settings,
            parse_probe(probe.stdout.splitlines()),
            sys.version_info[:3],
            platform.machine(),
        )
    except PodforgeError as error:
        print(f"podforge: {error}", file=sys.stderr)
        return 2
    json.dump(plan.model_dump(mode="json"), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C: one line, and out at once, not after the downloads in flight end (a killed
    fetcher is what the partial files and their locks are made for)."""
    print(
        "podforge fetch: interrupted; the partial files stay, the next run resumes them",
        file=sys.stderr,
        flush=True,
    )
    os._exit(130)


def _fetch(args: argparse.Namespace) -> int:
    # Imported here: every verb would pay its HTTP stack at start (a no-op's verify too).
    from podforge.pod.fetch import FetchError, Sources, fetch_all, read_manifest

    try:
        sources = Sources(
            hf_endpoint=os.environ.get("HF_ENDPOINT", "https://huggingface.co"),
            hf_token=secret("HF_TOKEN", os.environ),
            civitai_endpoint=os.environ.get("CIVITAI_ENDPOINT", "https://civitai.com"),
            civitai_token=secret("CIVITAI_TOKEN", os.environ),
            # huggingface_hub's own switch, so one variable turns Xet off for both.
            xet=os.environ.get("HF_HUB_DISABLE_XET", "").lower() not in ("1", "true", "yes", "on"),
        )
    except SecretFileError as error:
        print(f"podforge fetch: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupted)
    staging = Path(args.staging) if args.staging else None
    models_dir = Path(args.models_dir) if args.models_dir else None
    try:
        manifest = read_manifest(Path(args.manifest), models_dir)
        began = time.monotonic()
        results = fetch_all(
            manifest,
            sources,
            concurrency=args.concurrency,
            connections=args.connections,
            staging=staging,
        )
    except FetchError as error:
        for failure in str(error).split("; "):
            print(f"podforge fetch: FAILED {failure}", file=sys.stderr)
        return 1

    fetched = sorted(dest for dest, how in results.items() if how == "fetched")
    for dest in fetched:
        print(f"fetched {dest}")
    fetched_bytes = sum(Path(dest).stat().st_size for dest in fetched)
    seconds = time.monotonic() - began
    print(
        f"fetch: {len(fetched)} fetched ({fetched_bytes} bytes in {seconds:.1f} s), "
        f"{len(results) - len(fetched)} already in place"
    )
    return 0


def _stack(args: argparse.Namespace) -> int:
    # Imported here for the same reason as in _plan: `fetch` starts without pydantic.
    from podforge.controller import stack

    return stack.main(args)


def _add_stack_parser(verbs: argparse._SubParsersAction) -> None:
    stack = verbs.add_parser("stack", help="lock (or just check) the pinned environment")
    stack_verbs = stack.add_subparsers(dest="stack_verb", required=True)
    lock = stack_verbs.add_parser("lock", help="resolve with uv and write locks/PROFILE.txt")
    check = stack_verbs.add_parser("check", help="does the whole environment resolve?")
    check.add_argument(
        "dirs", nargs="*", help="checkouts whose requirements.txt to resolve (default: the pins')"
    )
    lock.add_argument(
        "--upgrade",
        action="store_true",
        help="read the index as of now, not as of the lock's moment: everything may move",
    )
    for parser in (lock, check):
        parser.add_argument(
            "--profile",
            default=DEFAULT_STACK,
            choices=[*sorted(STACK_PROFILES), TOOLS_LOCK],
            help=f"a stack, or {TOOLS_LOCK}: the pod tools' own venv (locks/{TOOLS_LOCK}.txt)",
        )
        parser.add_argument(
            "--with",
            dest="feature",
            choices=sorted(STACK_FEATURES),
            help="a feature's lock beside the profile's: locks/PROFILE+FEATURE.txt",
        )
        parser.set_defaults(run=_stack)


def _workflows(args: argparse.Namespace) -> int:
    if args.workflows_verb == "plan":  # on the laptop: the settings' pins and models
        from podforge.workflows import files

        return files.main(args)
    from podforge.workflows import pod

    return pod.main(args)


def _add_workflows_parser(verbs: argparse._SubParsersAction) -> None:
    flows = verbs.add_parser("workflows", help="do workflows find their models and nodes here?")
    flows_verbs = flows.add_subparsers(dest="workflows_verb", required=True)
    check = flows_verbs.add_parser("check", help="list each workflow's models and node types")
    check.add_argument("files", nargs="*", help="workflow JSON (default: the installed ones)")
    check.add_argument("--comfyui-dir", default="/workspace/ComfyUI", help="ComfyUI's checkout")
    check.add_argument("--models-dir", help="the models dir (default: <comfyui-dir>/models)")
    check.set_defaults(run=_workflows)
    plan = flows_verbs.add_parser(
        "plan", help="the models and node packs workflows need, and what cannot be resolved"
    )
    plan.add_argument("files", nargs="+", help="workflow JSON files or https:// URLs")
    plan.add_argument("--json", action="store_true", help="as JSON")
    plan.set_defaults(run=_workflows)
    install = flows_verbs.add_parser("install", help="fit the features' workflows to this pod")
    install.add_argument("--request", required=True, help="the workflows request file")
    install.add_argument("--stamp", required=True, help="where to record what was written")
    install.set_defaults(run=_workflows)


def _verify(args: argparse.Namespace) -> int:
    from podforge.pod import verify

    workflows = None
    if args.workflows:
        models_dir = args.models_dir or f"{args.comfyui_dir}/models"
        workflows = (args.workflows, args.comfyui_dir, models_dir)
    smoke = str(Path(args.comfyui_dir) / "output") if args.smoke else None
    return verify.main(
        args.plan,
        args.venv,
        args.logs,
        args.r2sync,
        args.timeout,
        args.quick,
        workflows,
        smoke,
        args.login,
        args.venv_wanted,
    )


def _auth_show(args: argparse.Namespace) -> int:
    """The login's credentials, on request (the deploy never prints them)."""
    from podforge.core.auth import Credentials

    try:
        login = Credentials.parse(Path(args.credentials).read_text())
    except (OSError, ValueError, KeyError) as error:
        print(f"podforge auth: cannot read {args.credentials}: {error}", file=sys.stderr)
        return 1
    print(f"user: {login.user}\npassword: {login.password}\napi token: {login.token}")
    return 0


def _r2sync(args: argparse.Namespace) -> int:
    from podforge.pod.r2sync.cli import run

    return run(args, os.environ)


def _add_r2sync_parser(verbs: argparse._SubParsersAction) -> None:
    sync = verbs.add_parser("r2sync", help="upload ComfyUI's outputs to R2, each exactly once")
    sync.add_argument(
        "--watch", action="append", default=[], metavar="DIR", help="a directory of outputs"
    )
    sync.add_argument("--journal", help="the sqlite journal (default: beside the first DIR)")
    sync.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds a file must stay unchanged to count as finished (default 10)",
    )
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="upload what is pending, then exit")
    mode.add_argument("--test", action="store_true", help="put/head/get/delete a probe object")
    mode.add_argument(
        "--list",
        action="store_true",
        help="every pod's uploads as the indexes list them (old layout too): key size sha256 pod",
    )
    sync.add_argument("--day", help="with --list: only this day (YYYY-MM-DD)")
    sync.set_defaults(run=_r2sync)


def _job(args: argparse.Namespace) -> int:
    from podforge.pod.job import main as job_main

    return job_main(args)


def _add_job_parser(verbs: argparse._SubParsersAction) -> None:
    job = verbs.add_parser("job", help="a command in the background (the deploy's model fetch)")
    job_verbs = job.add_subparsers(dest="job_verb", required=True)
    for verb, about in (
        ("start", "run the command detached; its output and exit code go into DIR"),
        ("run", "(what start detaches) run the command, then write DIR/exit"),
    ):
        parser = job_verbs.add_parser(verb, help=about)
        parser.add_argument("dir", help="the job's own directory")
        parser.add_argument(
            "--after-downloads",
            metavar="OTHER",
            help="start the command once the job OTHER (a uv sync) has its downloads",
        )
        parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
        parser.set_defaults(run=_job)
    wait = job_verbs.add_parser("wait", help="print the job's output until it ends; its code")
    wait.add_argument("dir", help="the job's own directory")
    wait.add_argument("--manifest", help="a model manifest: say how many of its files are in")
    wait.set_defaults(run=_job)


def _wheelhouse(args: argparse.Namespace) -> int:
    from podforge.pod.wheelhouse import main as wheelhouse_main

    return wheelhouse_main(args, os.environ)


def _add_wheelhouse_parser(verbs: argparse._SubParsersAction) -> None:
    house = verbs.add_parser("wheelhouse", help="wheels no index serves: found, fetched or built")
    house_verbs = house.add_subparsers(dest="wheelhouse_verb", required=True)
    ensure = house_verbs.add_parser(
        "ensure", help="the wheel on this volume (from the bucket, or built once); its sync line"
    )
    ensure.add_argument("requirement", help="NAME==VERSION")
    ensure.add_argument(
        "--source", required=True,
        help="the sdist, or a release asset's wheel: https:// or file:/// URL",
    )  # fmt: skip
    ensure.add_argument(
        "--source-sha256",
        help="its sha256 (an sdist's must be given; a release asset's unpinned: the first"
        " fetch's is recorded)",
    )
    ensure.add_argument("--python", required=True, help="the venv's python the wheel is for")
    ensure.add_argument("--home", required=True, help="the volume's wheelhouse directory")
    ensure.add_argument(
        "--against", action="append", default=[], metavar="DIST",
        help="a distribution the build compiles against (its version enters the key): torch",
    )  # fmt: skip
    ensure.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a build variable"
    )
    ensure.add_argument("--sha256", help="the sha256 a lock pins: any other wheel is refused")
    ensure.add_argument("--line-to", help="write the sync line to this file")
    ensure.set_defaults(run=_wheelhouse)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podforge")
    verbs = parser.add_subparsers(dest="verb", required=True)
    plan = verbs.add_parser("plan", help="print this machine's Plan as JSON")
    plan.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a setting")
    plan.set_defaults(run=_plan)
    fetch = verbs.add_parser("fetch", help="download the manifest's missing model files")
    fetch.add_argument(
        "manifest",
        help="JSON list of {dest, and repo+path, civitai (+file) or url; bytes, sha256}",
    )
    fetch.add_argument("--concurrency", type=int, default=4, help="files at once (default 4)")
    fetch.add_argument(
        "--connections", type=int, default=16, help="connections per large file (default 16)"
    )
    fetch.add_argument(
        "--staging", help="download here (local disk), then publish to the models dir"
    )
    fetch.add_argument(
        "--models-dir", help="every dest must lie inside it (symlinks followed); the deploy's"
    )
    fetch.set_defaults(run=_fetch)
    _add_stack_parser(verbs)
    _add_r2sync_parser(verbs)
    _add_workflows_parser(verbs)
    check = verbs.add_parser("verify", help="does the pod serve what its plan says?")
    check.add_argument("--plan", default="/opt/podforge/plan.json", help="the pod's plan")
    check.add_argument(
        "--venv", default=str(Path(sys.prefix)), help="ComfyUI's venv (default: this one)"
    )
    check.add_argument("--logs", default="/workspace/logs", help="the programs' log dir")
    check.add_argument(
        "--r2sync", metavar="R2_ENV_FILE", help="r2sync runs and --test passes with this file"
    )
    check.add_argument("--timeout", type=float, default=120, help="seconds to wait for ComfyUI")
    check.add_argument(
        "--quick",
        action="store_true",
        help="only ComfyUI's answer and supervisor's states (no S3 round trip, no torch)",
    )
    check.add_argument(
        "--workflows", metavar="STAMP", help="check the workflows this stamp lists as installed"
    )
    check.add_argument(
        "--smoke",
        action="store_true",
        help="also run a workflow needing no model file (its files go to <comfyui-dir>/output)",
    )
    check.add_argument("--comfyui-dir", default="/workspace/ComfyUI", help="ComfyUI's checkout")
    check.add_argument("--models-dir", help="the models dir (default: <comfyui-dir>/models)")
    check.add_argument(
        "--login", metavar="CREDENTIALS", help="check the login in front of each ComfyUI"
    )
    check.add_argument(
        "--venv-wanted",
        metavar="JSON",
        help="the venv holds exactly these distributions (name -> version; the deploy's)",
    )
    check.set_defaults(run=_verify)
    auth = verbs.add_parser("auth", help="the login in front of ComfyUI")
    auth_verbs = auth.add_subparsers(dest="auth_verb", required=True)
    show = auth_verbs.add_parser("show", help="print the user, password and API token")
    show.add_argument(
        "--credentials",
        default="/workspace/.podforge/auth/credentials.json",
        help="the credentials file (default: on the volume at /workspace)",
    )
    show.set_defaults(run=_auth_show)
    _add_job_parser(verbs)
    _add_wheelhouse_parser(verbs)
    args = parser.parse_args(argv)
    if args.verb == "r2sync" and not (args.test or args.list) and not args.watch:
        parser.error("r2sync needs at least one --watch DIR (or --test, or --list)")
    return int(args.run(args))
