"""How the settings are shown: their values with secrets masked (``govbus config``), and the
Markdown tables of docs/configuration.md, generated from the declarations."""

from __future__ import annotations

from typing import Any

from govbus.core.errors import ConfigError
from govbus.core.settings_spec import DECLARATIONS, SECRET, SECTIONS, URL, Declaration

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def shown(d: Declaration, value: Any) -> str:
    """``value`` of ``d`` as `govbus config` prints it: a secret as ``***``, a URL's password
    hidden."""
    if value is None or value == ():
        return ""
    if d.mask == SECRET:
        return "***"
    text = " ".join(value) if isinstance(value, tuple) else str(value)
    return " ".join(mask_url(part) for part in text.split()) if d.mask == URL else text


def mask_url(dsn: str) -> str:
    """``dsn`` with its password as ``***``: ``scheme://user:***@host/db``, ``password=***``."""
    scheme, sep, rest = dsn.partition("://")
    if sep:
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
        return dsn
    return " ".join("password=***" if p.startswith("password=") else p for p in dsn.split())


# --- the docs' table -------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """The settings as Markdown, one table per section: variable, what it is for, default,
    range."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += [f"### {section.__name__}", "", (section.__doc__ or "").strip(), "",
                  "| variable | what it is for | default | range |", "|---|---|---|---|"]
        lines += [f"| `{d.env}` | {_cell(d.doc)} | {_cell(d.default_text())} | "
                  f"{_cell(d.rule_text())} |" for d in DECLARATIONS if d.section ==
                  section.__name__]
        lines.append("")
    return "\n".join(lines)


def with_table(text: str) -> str:
    """``text`` (docs/configuration.md) with the generated table between its markers."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise ConfigError(f"no {BEGIN} ... {END} markers to put the settings table between")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"
