"""README result blocks that cannot drift from the committed report files.

A Markdown document marks each table it quotes from a committed report file::

    <!-- table: notebooks/results/digits/claims.md -->
    | claim | ... |
    <!-- end table -->

``python -m stability.docs README.md`` rewrites every block from its file (``make results`` runs it after the
reports); :func:`stale_blocks` lists the blocks that differ, and the test suite fails on any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    """(file path, quoted body) of every marked block, in order."""
    return [(m["path"], m["body"]) for m in BLOCK.finditer(text)]


def _body(root: Path, path: str) -> str:
    return (root / path).read_text(encoding="utf-8").rstrip("\n") + "\n"


def stale_blocks(document: Path) -> list[str]:
    """The files whose quoted block in ``document`` differs from the file (or that do not exist)."""
    root = document.parent
    stale = []
    for path, body in blocks(document.read_text(encoding="utf-8")):
        if not (root / path).is_file() or body != _body(root, path):
            stale.append(path)
    return stale


def sync(document: Path) -> int:
    """Rewrite every block of ``document`` from its file; returns how many blocks changed."""
    root = document.parent
    text = document.read_text(encoding="utf-8")
    changed = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if not (root / match["path"]).is_file():
            return match.group(0)  # left as it is; stale_blocks reports it
        body = _body(root, match["path"])
        changed += body != match["body"]
        return match.group(1) + body + match.group(4)

    document.write_text(BLOCK.sub(replace, text))
    return changed


if __name__ == "__main__":
    for name in sys.argv[1:] or ["README.md"]:
        print(f"{name}: {sync(Path(name))} block(s) updated")
