"""Plain-text units shared by the CLI and the explanations of the core modules."""

from __future__ import annotations


def human_seconds(value: float) -> str:
    """Format a time in s, ms or us with 3 significant digits (whole seconds from 1,000 s)."""
    if value >= 1000:
        return f"{value:,.0f} s"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"
