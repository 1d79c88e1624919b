#!/usr/bin/env python3
"""Rewrite the README's generated tables (settings, OSC addresses) from the code.

tests/test_readme.py fails when they drift; this puts them back: python scripts/readme_tables.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from realtime.control.config import settings_table  # noqa: E402
from realtime.control.osc import format_address_table  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_table(text: str, header: str, table: str) -> str:
    """Swap the markdown table that starts with `header` for `table`."""
    start = text.index(header)
    end = text.find("\n\n", start)
    return text[:start] + table + (text[end:] if end != -1 else "\n")


def main() -> int:
    text = README.read_text()
    text = replace_table(text, "| key | range | default |", settings_table(markdown=True))
    text = replace_table(text, "| dir | address | type |", format_address_table(markdown=True))
    README.write_text(text)
    print(f"updated the tables in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
