"""One-line errors for bad user input (configs, YAML, CLI flags)."""

from __future__ import annotations

import difflib

from pydantic import ValidationError


class SpecError(ValueError):
    """Invalid user input: the message is one line that names the value and the fix."""


# Fields that hold a union picked by its 'kind' key: pydantic puts the chosen kind into error
# locations ("ffn.moe.foo"), which the user never wrote.
_UNION_FIELDS = frozenset({"attention", "selection", "ffn"})


def _format_location(loc: tuple) -> str:
    parts: list[str] = []
    previous = None
    for item in loc:
        text = str(item)
        skip = previous in _UNION_FIELDS or ("[" in text and "]" in text)
        previous = item
        if skip:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append("." + text)
        else:
            parts.append(text)
    return "".join(parts) or "<root>"


def _pick_error(errors: list[dict]) -> dict:
    """Choose the error to report: an unknown key first, since a misspelled key also leaves one missing."""
    for error in errors:
        if error.get("type") == "extra_forbidden":
            return error
    return errors[0]


def _suggestion(key: str, errors: list[dict], parent: tuple) -> str:
    """Return a hint naming the missing key at the same place that an unknown key most resembles."""
    missing = [
        str(error["loc"][-1])
        for error in errors
        if error.get("type") == "missing" and tuple(error.get("loc", ()))[:-1] == parent
    ]
    close = difflib.get_close_matches(key, missing, n=1, cutoff=0.6)
    return f": did you mean '{close[0]}'?" if close else ": remove it or check its spelling"


def _plain(message: str) -> str:
    """Reword pydantic's "Input should be ..." as "must be ..."."""
    if message.startswith("Input should be "):
        return "must be " + message[len("Input should be "):]
    return message


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """Render one pydantic error as one line: where, what value, and the fix."""
    errors = err.errors()
    first = _pick_error(errors)
    loc = tuple(first.get("loc", ()))
    where = _format_location(loc)
    kind = first.get("type", "")
    message = first.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    prefix = f"{source}: " if source else ""
    if kind == "extra_forbidden":
        return f"{prefix}unknown key '{where}'{_suggestion(str(loc[-1]), errors, loc[:-1])}"
    if kind == "missing":
        return f"{prefix}missing required key '{where}': add it"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    context = first.get("ctx") or {}
    if kind == "union_tag_invalid":
        expected = context.get("expected_tags", "")
        return f"{prefix}invalid '{where}.kind' = {context.get('tag')!r}: use one of {expected}{more}"
    if kind == "union_tag_not_found":
        return f"{prefix}missing required key '{where}.kind': add it{more}"
    value = first.get("input")
    if where == "<root>":
        # A rule over the whole spec: its message names the fields.
        return f"{prefix}{message}{more}"
    if isinstance(value, (dict, list)):
        # A rule over a whole mapping (e.g. a cross-field check): the message names the fields.
        return f"{prefix}invalid '{where}': {_plain(message)}{more}"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{prefix}invalid '{where}' = {shown}: {_plain(message)}{more}"
