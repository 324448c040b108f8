"""``govbus config``: the effective settings of this environment, and the docs' table of them.

``govbus config [--json]`` lists every declared setting with its effective value and where it
comes from (environment, embedded runtime, default), after checking them all as every process
does at start-up: an unknown ``GOVBUS_*`` variable or a value out of range is an error here too.
Passwords in database URLs and the token are masked. ``govbus config --markdown`` prints the
table of docs/configuration.md, generated from the declarations; ``--markdown FILE`` puts it
between the markers of FILE.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from govbus.core.errors import ConfigError


def _markdown(target: str) -> int:
    from govbus.core.settings_docs import markdown_table, with_table

    if target == "-":
        print(markdown_table(), end="")
        return 0
    path = Path(target)
    try:
        text = path.read_text(encoding="utf-8")
        updated = with_table(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot update {path}: {exc.strerror}") from exc
    print(f"{path}: {'table updated' if updated != text else 'table up to date'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from govbus.cli import dumps, printable, say
    from govbus.core.config import effective_settings

    if args.markdown:
        return _markdown(args.markdown)
    rows = effective_settings()
    if args.json:
        print(dumps(rows))
        return 0
    width = max(len(r["variable"]) for r in rows)
    for r in rows:
        say(f"{r['variable']:<{width}}  {printable(r['value']) or '-'}  ({r['source']})")
    return 0


def register(sub: Any, add: Any) -> None:
    """Add ``config`` to the ``govbus`` parser."""
    p = add("config", cmd_config, "check the settings and list their effective values "
            "(secrets masked); --markdown: the table of docs/configuration.md")
    p.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                   help="print the settings table as Markdown; with FILE, replace the table "
                        "between FILE's settings markers (docs/configuration.md)")
