"""Text from callers: whether PostgreSQL can store it, and how much of it an error message may quote."""

from __future__ import annotations

ECHO_LIMIT = 40


def storable(text: str) -> bool:
    """PostgreSQL's text holds neither NUL nor an unpaired surrogate (which JSON's "\\ud800" can carry)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def shown(text: object) -> str:
    """A caller's input as an error message quotes it: a short prefix, so no answer or log line carries a
    whole document (or a secret pasted into the wrong field) back."""
    quoted = str(text)
    return quoted if len(quoted) <= ECHO_LIMIT else quoted[:ECHO_LIMIT] + "…"
