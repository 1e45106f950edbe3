"""ComfyUI stand-in for podforge's sandbox: ComfyUI's own command line, /system_stats.

The real comfy/cli_args.py parses the arguments, so a flag ComfyUI rejects exits 2 here
just as it does in ComfyUI. GET /system_stats answers in ComfyUI's JSON shape.
"""

import json
import os
import platform
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import comfy.options

comfy.options.enable_args_parsing()
from comfy.cli_args import args  # noqa: E402  (parses sys.argv, like ComfyUI's main.py)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path not in ("/system_stats", "/api/system_stats"):
            self.send_error(404)
            return
        body = json.dumps(
            {
                "system": {
                    "os": os.name,
                    "ram_total": 0,
                    "ram_free": 0,
                    "comfyui_version": "0.3.64",
                    "python_version": sys.version,
                    "pytorch_version": "stand-in",
                    "embedded_python": False,
                    "argv": sys.argv,
                },
                "devices": [
                    {
                        "name": os.environ.get("CUDA_VISIBLE_DEVICES", "cpu"),
                        "type": "cuda",
                        "index": 0,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *values: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % values}\n")


if __name__ == "__main__":
    print(f"ComfyUI stand-in on {platform.node()} {args.listen}:{args.port}", flush=True)
    # --listen takes a comma-separated list; the stand-in serves the first address.
    ThreadingHTTPServer((args.listen.split(",")[0], args.port), Handler).serve_forever()
