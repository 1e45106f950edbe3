"""A pydantic ValidationError told as people read it: where, and why, never the value. Pure.

The value may be a stranger's (a workflow's URL with its token, say), so messages built
from a validation error name the field and the rule it broke, and leave the value out.
"""

from __future__ import annotations

from pydantic import ValidationError


def where_and_why(error: ValidationError) -> tuple[str, str]:
    """(the first problem's field, dotted: ``models.0.url``; the rule it broke)."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return field, str((first.get("ctx") or {}).get("error") or first["msg"])
