"""mkdocs hook: the studies' own pages (``studies/<name>/``, outside ``docs/``) become pages of the site.

The study records live at the repository root, beside the library, and mkdocs reads only
``docs/``. At build time this hook adds every ``*.md``, ``*.png`` and ``*.json`` under
``studies/`` (not the run records under ``runs/``) as a file of the site at the same path,
``studies/<name>/...``, so ``studies/<name>/summary.md`` is that study's page.

Links are written as on GitHub: from ``docs/results.md`` a study page is
``../studies/<name>/summary.md``. Such a link leaves ``docs/``, so before mkdocs checks the
links this hook rewrites each one whose target lies under ``studies/`` (or ``docs/``, from a
study page) to the same file's place in the site. Every link is still checked by
``mkdocs build --strict``: a link to a study file that does not exist stays broken.
(Symbolic links are not used: git on Windows does not keep them.)
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

STUDY_SUFFIXES = (".md", ".png", ".json")
# an inline Markdown link or image target: ](target) or ](target "title")
LINK_TARGET = re.compile(r"(\]\()([^)\s]+)")


def _repo_root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the studies' summaries, notes, plots and JSON to the site under ``studies/``."""
    root = _repo_root(config)
    for path in sorted((root / "studies").rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.suffix in STUDY_SUFFIXES and "runs" not in relative.parts:
            files.append(File.generated(config, relative.as_posix(), abs_src_path=str(path)))
    return files


def _site_uri(repo_path: str, docs_prefix: str) -> str | None:
    """Where a repository path (posix, relative to the root) lives in the site; None if not in the site."""
    if repo_path.startswith("studies/"):
        return repo_path
    if repo_path.startswith(docs_prefix):
        return repo_path[len(docs_prefix):]
    return None


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Rewrite GitHub-relative links into ``studies/`` (and back into ``docs/``) to their place in the site."""
    root = _repo_root(config)
    docs_prefix = Path(config.docs_dir).resolve().relative_to(root).as_posix() + "/"
    page_uri = page.file.src_uri
    # where the page's source sits in the repository: docs/<uri>, or studies/<...> for a study page
    page_repo_path = page_uri if page_uri.startswith("studies/") else docs_prefix + page_uri

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):  # URL, anchor or absolute path: untouched
            return match.group(0)
        path, hash_sign, fragment = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), path))
        site_uri = _site_uri(repo_path, docs_prefix)
        if site_uri is None:
            return match.group(0)
        relative = posixpath.relpath(site_uri, posixpath.dirname(page_uri) or ".")
        return match.group(1) + relative + hash_sign + fragment

    return LINK_TARGET.sub(rewrite, markdown)
