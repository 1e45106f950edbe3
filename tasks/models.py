"""Model files: the manifest the pod-side fetcher works from."""

from __future__ import annotations

import io
import json

from pyinfra.api import deploy
from pyinfra.operations import files

from podforge.config import Settings
from podforge.plan import Plan


@deploy("Models")
def install(settings: Settings, plan: Plan) -> None:
    manifest = [model.model_dump(mode="json") for model in plan.models]
    files.put(
        name=f"Model manifest ({len(manifest)} files, {plan.total_bytes / 1e9:.1f} GB)",
        src=io.StringIO(json.dumps(manifest, indent=2, sort_keys=True) + "\n"),
        dest=f"{settings.podforge_dir}/manifest.json",
    )
