"""Deploy tasks, one concern each; deploy.py calls them in order."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_JINJA = Environment(
    loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True
)
# Values a shell script reads: quoted (settings are validated by kind as well).
_JINJA.filters["quote"] = shlex.quote


def render(template: str, **context: Any) -> str:
    """A template from templates/, rendered here (its digest is compared with the pod's)."""
    return _JINJA.get_template(template).render(**context)
