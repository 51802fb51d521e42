"""The README is the site's front door: its links resolve, its docs pages are in the site's nav, it stays short."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# an inline Markdown link or image: [text](target) / ![alt](target)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(markdown: str) -> List[str]:
    """Link targets that point into the repository (no URL, no page anchor), without their #fragment."""
    return [t.partition("#")[0] for t in LINK.findall(markdown) if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def _nav_pages(node: object) -> Iterator[str]:
    """Every page path of mkdocs.yml's nav (nested sections included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def _site() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_readme_links_point_at_files_that_exist() -> None:
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert len(links) >= 20, links  # the README links its docs pages and study summaries
    missing = [t for t in links if not (ROOT / t).is_file()]
    assert missing == []


def test_readme_docs_links_are_pages_of_the_site() -> None:
    site = _site()
    docs_dir = site.get("docs_dir", "docs")
    nav = set(_nav_pages(site["nav"]))
    docs_links = [t for t in _relative_links(README.read_text(encoding="utf-8")) if t.startswith(docs_dir + "/")]
    assert {"docs/getting-started.md", "docs/method.md", "docs/results.md", "docs/cli.md"} <= set(docs_links)
    assert [t for t in docs_links if t[len(docs_dir) + 1:] not in nav] == []


def test_every_docs_page_is_in_the_nav() -> None:
    site = _site()
    docs = ROOT / site.get("docs_dir", "docs")
    nav = set(_nav_pages(site["nav"]))
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    assert sorted(pages - nav) == [], "add these pages to nav in mkdocs.yml"
    # pages the nav names that are neither in docs/ nor a study's page (added by docs/hooks/studies.py)
    assert sorted(p for p in nav - pages if not (p.startswith("studies/") and (ROOT / p).is_file())) == []


def test_readme_keeps_the_two_set_up_commands_and_stays_short() -> None:
    text = README.read_text(encoding="utf-8")
    assert "scripts/setup.sh && .venv/bin/harmonicdet demo\n" in text
    assert "scripts/setup.sh --test && .venv/bin/python -m pytest\n" in text
    assert len(text.splitlines()) <= 150


def test_relative_links_ignore_urls_and_anchors() -> None:
    markdown = "[a](docs/x.md#part) [b](https://example.org/y.md) [c](#here) ![d](docs/images/e.png)"
    assert _relative_links(markdown) == ["docs/x.md", "docs/images/e.png"]
