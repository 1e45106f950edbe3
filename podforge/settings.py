"""The one settings loader, for every entry point that reads settings: the deploy
(tasks/desired.py), the image's build stage, `podforge stack`, `podforge workflows plan`
and `podforge plan`. The sources, lowest first:

1. ``group_data/all.py`` (on the laptop; the pod has no repo): what users set for every host;
2. the settings the last deploy left on the pod (the boot phase only: the wish is the same,
   only the GPU may differ; the secret half is a 0600 file);
3. the caller's data (pyinfra's host data, ``--data key=value``, build arguments);
4. the environment, each setting by its upper-case name; a secret (``SECRET_FIELDS``) also by
   the 0600 file NAME_FILE names (podforge/secrets.py).

Validation is the core's (``load_settings``): a SettingsError names the setting and the fix.
"""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from podforge.core.config import SECRET_FIELDS, Settings, env_name, load_settings
from podforge.secrets import secret_file, with_secret_files

REPO = Path(__file__).resolve().parents[1]
SECRET_NAMES = frozenset(env_name(field) for field in SECRET_FIELDS)


def group_data(repo: Path = REPO) -> dict[str, Any]:
    """What users set for every host in group_data/all.py (pyinfra reads it the same way)."""
    values = runpy.run_path(str(repo / "group_data" / "all.py"))
    return {key: value for key, value in values.items() if not key.startswith("_")}


def saved_settings_paths(podforge_dir: str) -> tuple[str, str]:
    """Where a deploy leaves its settings for the boot phase: (public, secrets 0600)."""
    return f"{podforge_dir}/settings.json", f"{podforge_dir}/secrets/settings.json"


def saved_settings(podforge_dir: str) -> dict[str, Any]:
    """The settings the last deploy left on this pod (none before the first)."""
    public, secret = saved_settings_paths(podforge_dir)
    found: dict[str, Any] = {}
    if Path(public).exists():
        found.update(json.loads(Path(public).read_text()))
    if Path(secret).exists():
        found.update(json.loads(secret_file(secret, "the saved secret settings")))
    return found


def load(
    data: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
    *,
    with_group_data: bool = False,
    saved_in: str | None = None,
) -> Settings:
    """The settings from every source this entry point has (the module's docstring)."""
    values: dict[str, Any] = group_data() if with_group_data else {}
    if saved_in is not None:
        values.update(saved_settings(saved_in))
    values.update(data)
    return load_settings(values, with_secret_files(environ, SECRET_NAMES))
