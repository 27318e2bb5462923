"""The README and docs/: every relative link points at a file that exists, and every #anchor at a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) outside code; a target with a scheme (https:, mailto:) is not ours to check.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _anchors(document: Path) -> set[str]:
    """The anchors GitHub makes for the headings: lower case, punctuation dropped, spaces as dashes."""
    text = _FENCE.sub("", document.read_text())
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _links(document: Path) -> list[str]:
    text = _FENCE.sub("", document.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in _LINK.findall(text) if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in _links(document):
        path_part, _, anchor = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists():
            broken.append(
                f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}"
            )
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading for #{anchor} in {linked.relative_to(ROOT)}")
    assert broken == []


def test_the_readme_links_the_development_docs() -> None:
    links = _links(ROOT / "README.md")
    assert {"docs/development.md", "docs/lab.md", "docs/performance.md"} <= set(links)
