"""Plain-text output for people: aligned tables, grouped digits, counted nouns (one home for
the `ccerx` commands' readable output; `--json` is for machines)."""
from __future__ import annotations

import unicodedata


def format_table(head: list[str], rows: list[list[str]], align: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart; `align` holds one letter per
    column, l or r (default: the first column left, the others right). Widths are display
    widths: a Chinese character takes two columns of a terminal."""
    align = align or "l" + "r" * (len(head) - 1)
    widths = [max(display_width(cell) for cell in column) for column in zip(head, *rows)]
    lines = []
    for row in [head] + rows:
        cells = []
        for cell, w, a in zip(row, widths, align):
            pad = " " * (w - display_width(cell))
            cells.append(cell + pad if a == "l" else pad + cell)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def group_thousands(amount: str) -> str:
    """A decimal text with its whole part grouped by thousands: "-1234567.50" -> "-1,234,567.50"
    (text in, text out: amounts stay exact)."""
    sign = "-" if amount.startswith("-") else ""
    whole, dot, fraction = amount.lstrip("+-").partition(".")
    if not whole.isdigit():
        return amount
    return f"{sign}{int(whole):,}{dot}{fraction}"


def plural(count: int, noun: str, nouns: str = "") -> str:
    """"1 settlement", "2 settlements", "1,000 accounts"."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"
