"""One-line errors for bad user input (configs, YAML, CLI flags)."""

from __future__ import annotations

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


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """Render the first pydantic error as one line: where, what value, and the fix."""
    first = err.errors()[0]
    where = _format_location(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    message = first.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    prefix = f"{source}: " if source else ""
    if kind == "extra_forbidden":
        return f"{prefix}unknown key '{where}': remove it or check its spelling"
    if kind == "missing":
        return f"{prefix}missing required key '{where}': add it"
    value = first.get("input")
    more = f" (and {len(err.errors()) - 1} more errors)" if len(err.errors()) > 1 else ""
    if isinstance(value, (dict, list)):
        # A rule over a whole mapping (e.g. a cross-field check): the message names the fields.
        return f"{prefix}invalid '{where}': {message}{more}"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{prefix}invalid '{where}' = {shown}: {message}{more}"
