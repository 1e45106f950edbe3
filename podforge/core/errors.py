"""The family of podforge's own errors: a caller catches ``PodforgeError`` for all of them.

Each error's message is one line naming the file, field or host and the fix, and never a
secret: it is printed as it is. The classes stay beside the code that raises them; the
builtin base each also keeps (``ValueError``: pydantic turns those raised by a validator
into a field's error) is for callers that catch by kind.
"""

from __future__ import annotations


class PodforgeError(Exception):
    """Something podforge cannot do or accept; the message says what and why."""
