"""Jinja2 templates of the bundle's self-documentation: MODEL_CARD.md and report.html."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, 'n/a' for None (the card's and report's one number format)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}"


def sci(value: Any) -> str:
    """An error metric: scientific below 0.01, else 4 significant digits; 'n/a' for None."""
    if value is None:
        return "n/a"
    return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e3) else f"{value:.4g}"


def inline_md(text: Any):
    """The card's inline Markdown (`**bold**`, `` `code` ``) as HTML, everything else escaped."""
    import re

    from markupsafe import Markup, escape
    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html)
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html))


def environment(markdown: bool = False):
    """The template environment: HTML autoescaped, Markdown not; undefined names are errors."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=not markdown,
                             undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"], trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(fmt=fmt, sci=sci, md=inline_md)
    return env
