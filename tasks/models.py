"""Model files: the manifest, and the pod-side fetcher when the fact says files are missing."""

from __future__ import annotations

import io
import json
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import NestedOperationError
from pyinfra.operations import files, python

from podforge import stamps
from podforge.config import Settings
from podforge.plan import Plan


@deploy("Models")
def install(settings: Settings, plan: Plan, present: dict[str, dict[str, Any]]) -> None:
    manifest_path = f"{settings.podforge_dir}/manifest.json"
    manifest = [model.model_dump(mode="json") for model in plan.models]
    files.put(
        name=f"Model manifest ({len(manifest)} files, {plan.total_bytes / 1e9:.1f} GB planned)",
        src=io.StringIO(json.dumps(manifest, indent=2, sort_keys=True) + "\n"),
        dest=manifest_path,
    )
    token_file = f"{settings.podforge_dir}/hf_token"
    if settings.hf_token is not None:
        # pyinfra uploads, then chmods: the private dir keeps the token unreadable meanwhile.
        files.directory(
            name="podforge's dir is private (0700)", path=settings.podforge_dir, mode="700"
        )
        files.put(
            name="Hugging Face token (0600)",
            src=io.StringIO(settings.hf_token.get_secret_value()),
            dest=token_file,
            mode="600",
        )
    missing = [m for m in plan.models if not stamps.is_current(present[m.dest], m.bytes, m.sha256)]
    if not missing:
        host.noop(f"all {len(plan.models)} model files are in place and verified")
        return
    python.call(
        name=f"Fetch {len(missing)} missing model files",
        function=_run_fetcher,
        command=(
            f"HF_ENDPOINT={settings.hf_endpoint}"
            f" HF_TOKEN_FILE={token_file}"
            f" {settings.venv_dir}/bin/podforge fetch {manifest_path}"
            f" --concurrency {settings.fetch_concurrency}"
            + (f" --staging {settings.models_staging_dir}" if settings.models_staging_dir else "")
            # One stream, so progress, "fetched" and "FAILED" lines keep their order.
            + " 2>&1"
        ),
    )


def _run_fetcher(command: str) -> None:
    """Run the fetcher with its lines shown live under the host's prefix, as they come.

    A fetch of tens of GB takes minutes: a plain shell op would stay silent until the end.
    """
    succeeded, _ = host.run_shell_command(
        StringCommand(command), print_output=True, print_input=False
    )
    if not succeeded:
        # Fails the operation without a Python traceback; the fetcher's lines above name
        # each file that failed and why.
        raise NestedOperationError("the model fetcher failed: see its FAILED lines above")
