"""python -m sandbox up|status|down|stop-pod NAME|start-pod NAME (see sandbox/control.py)."""

from __future__ import annotations

import argparse
import sys

from sandbox import control


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    verbs = parser.add_subparsers(dest="verb", required=True)
    start = verbs.add_parser("up", help="start pods, the hub and S3")
    start.add_argument(
        "--gpus",
        default="rtx-4080-super,h100",
        help="one pod per GPU profile (sandbox/gpus/*, or none), comma-separated",
    )
    start.add_argument("--file-size", type=int, default=64 * 1024, help="bytes per hub file")
    start.add_argument("--no-xet", action="store_true", help="the hub offers plain HTTP only")
    verbs.add_parser("status", help="what is running")
    verbs.add_parser("down", help="stop everything and remove the sandbox's files")
    kill = verbs.add_parser("stop-pod", help="kill one pod (as if it died)")
    kill.add_argument("name")
    restart = verbs.add_parser("start-pod", help="start a stopped pod again on its own files")
    restart.add_argument("name")
    args = parser.parse_args()
    try:
        return _run(args)
    except (FileNotFoundError, KeyError, RuntimeError) as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.verb == "up":
        control.up(args.gpus.split(","), file_size=args.file_size, offer_xet=not args.no_xet)
        print(control.status())
    elif args.verb == "status":
        print(control.status())
    elif args.verb == "down":
        control.down()
        print("sandbox: stopped and removed")
    elif args.verb == "start-pod":
        control.restart_pod(args.name)
        print(control.status())
    else:
        control.stop_one_pod(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
