"""A document with a generated section: the lines between two markers are written from code.

``docs/gen_state_diagram.py`` and ``docs/gen_engine_events.py`` each render their section (it
starts with their own ``BEGIN`` marker and ends with :data:`END`) and hand it to :func:`run`;
their tests compare the committed document with :func:`splice` of a fresh rendering, so a stale
document fails the suite.

Error handling: :class:`GenerationError` when the document lost its markers (and, raised by a
generator, when the code it reads is inconsistent).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

END = "<!-- END GENERATED -->"


class GenerationError(Exception):
    """The generated section cannot be written."""


def splice(document: str, generated: str, begin: str, name: str) -> str:
    """``document`` (called ``name`` in errors) with the section from ``begin`` to :data:`END`
    replaced by ``generated``."""
    try:
        head, rest = document.split(begin, 1)
        _, tail = rest.split(END + "\n", 1)
    except ValueError:
        raise GenerationError(f"{name} lost its generated-section markers") from None
    return head + generated + tail


def run(doc: Path, begin: str, render: Callable[[], str], script: str, argv: list[str]) -> int:
    """The generator's command line: rewrite ``doc`` in place, or with ``--check`` exit 1 when
    it is stale (``script`` is named in the message)."""
    current = doc.read_text(encoding="utf-8")
    wanted = splice(current, render(), begin, doc.name)
    if "--check" in argv:
        if wanted != current:
            print(f"{doc} is stale: run {script}", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        doc.write_text(wanted, encoding="utf-8")
        print(f"rewrote {doc}")
    return 0
