"""mkdocs hook: the command line page's option tables, rendered from ``harmonicdet``'s own parser at build time.

``docs/cli.md`` describes each sub-command by hand under a ``## harmonicdet NAME`` heading and
marks where its options go with ``<!-- options: NAME -->``. This hook replaces each marker with
the sub-command's usage and a table of its arguments and help texts, taken from
``harmonicdet.cli.build_parser()``, so the page cannot drift from ``harmonicdet NAME --help``.
A sub-command without a marker, or a marker naming no sub-command, is a warning, which fails
``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import logging
import re
from typing import Dict, List

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

CLI_PAGE = "cli.md"
MARKER = re.compile(r"<!-- options: ([\w -]+?) -->")
log = logging.getLogger("mkdocs.hooks.cli_reference")


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> Dict[str, argparse.ArgumentParser]:
    """Every sub-command, nested ones as ``"data scenes"``, mapped to its parser."""
    found: Dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_subcommands(sub, prefix + name + " "))
    return found


def _cell(text: str) -> str:
    """A help text as one Markdown table cell: no pipes, stars or angle brackets read as markup."""
    text = " ".join(text.split())
    return re.sub(r"([|*<>\\])", r"\\\1", text)


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
    return f"{', '.join(action.option_strings)} {metavar}"


def _render(name: str, parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    rows: List[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            rows += [f"| `{sub}` | sub-command: [`harmonicdet {name} {sub}`](#harmonicdet-{name}-{sub}) |"
                     for sub in action.choices]
            continue
        rows.append(f"| `{_argument(action)}` | {_cell(action.help or '')} |")
    usage = parser.format_usage().strip()
    return "\n".join(["```text", usage, "```", "", "| argument | meaning |", "|---|---|", *rows])


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace each ``<!-- options: NAME -->`` of the command line page with NAME's usage and arguments."""
    if page.file.src_uri != CLI_PAGE:
        return markdown
    from harmonicdet.cli import build_parser

    commands = _subcommands(build_parser())
    marked = set(MARKER.findall(markdown))
    for name in sorted(set(commands) - marked):
        log.warning(f"{CLI_PAGE}: sub-command 'harmonicdet {name}' has no '<!-- options: {name} -->' section")
    for name in sorted(marked - set(commands)):
        log.warning(f"{CLI_PAGE}: '<!-- options: {name} -->' names no sub-command of harmonicdet")
    return MARKER.sub(lambda m: _render(m.group(1), commands[m.group(1)]) if m.group(1) in commands else "",
                      markdown)
