"""Two integers added by a compiled extension."""

from ctally._native import add

__all__ = ["add"]
