"""A stand-in of RunPod's REST API v2 `GET /v2/pods` (RunPod is unreachable from here).

    python -m sandbox.runpod_api --port 8091 --answers answers.json   (key in RUNPOD_API_KEY)

Each request reads the answers file again, so a test changes the API's behaviour between
calls by rewriting it. The file holds one of:
    {"pods": [...]}                                    200, the v2 listPods body
    {"status": 401|403|500, "problem": {...}}          RFC 9457 problem+json
    {"status": 429, "retry_after": 1, "times": 2, "then": {"pods": [...]}}
                                                       429 for the first `times` requests
    {"delay": 30}                                      answers nothing for 30 s
    {"raw": "<html>..."}                               200 with a body that is not JSON
A request without the right bearer token gets v2's 401 whatever the file says.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, status: int, problem: dict[str, Any], extra: dict[str, str]) -> None:
        body = json.dumps({"status": status, **problem}).encode()
        self._send(status, body, "application/problem+json", extra)

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/v2/pods":
            self._problem(404, {"title": "Not Found", "detail": self.path}, {})
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._problem(401, {"title": "Unauthorized", "detail": "invalid bearer token"}, {})
            return
        answer = json.loads(self.server.answers.read_text())
        self.server.requests += 1
        if "delay" in answer:
            time.sleep(answer["delay"])
            return
        if answer.get("status") == 429:
            if self.server.requests <= answer.get("times", 1_000_000):
                limits = {"Retry-After": str(answer["retry_after"]), "RateLimit-Remaining": "0"}
                self._problem(429, {"title": "Too Many Requests"}, limits)
                return
            answer = answer["then"]
        if "raw" in answer:
            self._send(200, answer["raw"].encode(), "text/html", {})
        elif "problem" in answer:
            self._problem(answer["status"], answer["problem"], {})
        else:
            self._send(200, json.dumps(answer).encode(), "application/json", {})


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, answers: Path, api_key: str) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.answers, self.api_key, self.requests = answers, api_key, 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.runpod_api")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    args = parser.parse_args()
    ApiServer(args.port, args.answers, os.environ["RUNPOD_API_KEY"]).serve_forever()


if __name__ == "__main__":
    main()
