"""Progress of long runs on stderr, only when stderr is a terminal and only once a run passes two seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO

SHOW_AFTER_S = 2.0


class Progress:
    """A one-line ``label: done/total (elapsed s)`` counter, redrawn in place on a terminal.

    Call it as ``progress(done, total)``: the engine's tracing functions take it
    as their ``progress`` callback. Nothing is written to a pipe or a file, and
    nothing during the first :data:`SHOW_AFTER_S` seconds, so short runs and
    scripted runs stay quiet; :meth:`close` ends the line.
    """

    def __init__(self, label: str, stream: TextIO | None = None, force: bool = False):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        if not self.enabled or elapsed < SHOW_AFTER_S:
            return
        self.stream.write(f"\r{self.label}: {done}/{total} ({elapsed:.0f} s)")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
