"""A small progress reporter for long jobs (stderr; in place on a terminal, sparse in logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, stream=None, min_interval=0.5):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.min_interval = min_interval if self.tty else 10.0
        self.shown = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.min_interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        if self.total:
            eta = (self.total - done) / rate if rate else 0
            text = (f"{self.label}: {done:,}/{self.total:,} ({100 * done / self.total:.0f}%) "
                    f"{rate:,.0f}/s, eta {eta:.0f}s")
        else:
            text = f"{self.label}: {done:,} {rate:,.0f}/s"
        self.stream.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
