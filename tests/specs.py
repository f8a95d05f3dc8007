"""The workflow specs the unit tests share, each kept once as a file under ``tests/data/specs/``.

A test that needs a variant of one derives it from this text, where the reader sees the change
(a ``.replace()``, or an update of the parsed YAML), rather than keeping a copy.
"""

from __future__ import annotations

import pathlib

__all__ = ["SPECS", "spec_text"]

SPECS = pathlib.Path(__file__).resolve().parent / "data" / "specs"


def spec_text(name: str) -> str:
    """Return the YAML text of ``tests/data/specs/<name>.yaml``."""
    return (SPECS / f"{name}.yaml").read_text(encoding="utf-8")
