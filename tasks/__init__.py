"""Deploy tasks, one concern each; deploy.py calls them in order."""

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
