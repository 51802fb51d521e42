"""mkdocs hook: Sphinx cross-reference roles in the docstrings render as plain code on the API pages.

The package's docstrings name other objects as Sphinx does (``:func:`harmonic_terms```), which
mkdocstrings' Markdown renders as the role's text followed by the code span:
``:func:<code>harmonic_terms</code>``. This hook drops the role prefix, leaving the code span.
"""

from __future__ import annotations

import re

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Remove ``:role:`` prefixes in front of code spans."""
    return SPHINX_ROLE.sub("", html)
