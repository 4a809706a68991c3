"""Terminal output of the command line: progress and tables, through ``rich`` (a dependency).

``rich`` is imported inside the functions, so ``import refimpl`` does not pay for it.

* :class:`Progress` counts finished units (epochs, instances): a ``rich`` progress bar on a
  terminal; elsewhere (a pipe, a log file, pytest's capture) one plain line per ``every``
  fraction of the work (or per unit with ``every=0``), so logs stay readable.
* :func:`table` renders rows as a plain-text table (``rich.table.Table``, no colour, no box
  characters: the text is the same on a terminal, in a file and in a test).
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

__all__ = ["Progress", "table"]


def table(header: Sequence[str], rows: Sequence[Sequence], *, align: Optional[Sequence[str]] = None) -> str:
    """``rows`` under ``header`` as plain text (columns padded, a rule under the header)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    rule = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n")  # SIMPLE_HEAD in ASCII
    t = Table(box=rule, show_edge=False, pad_edge=False, header_style="", safe_box=True)
    for i, h in enumerate(header):
        t.add_column(h, justify=(align[i] if align else "left"), no_wrap=True)
    for r in rows:
        t.add_row(*("" if c is None else str(c) for c in r))
    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, force_terminal=False, highlight=False,
            emoji=False, markup=False).print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines() if line.strip())


class Progress:
    """Progress over ``total`` units named ``unit``.

    ``advance(description="")`` after each unit; ``line(text)`` prints a line above the bar (or
    plainly); ``close()`` at the end. ``quiet``: nothing at all. ``stream``: where plain lines go
    (default stdout); the bar is used only when that stream is a terminal (or ``force="rich"``).
    """

    def __init__(self, total: int, unit: str = "items", *, stream=None, quiet: bool = False,
                 every: float = 0.1, force: Optional[str] = None, label: str = "", done: int = 0):
        self.total, self.unit, self.quiet, self.every, self.label = int(total), unit, quiet, every, label
        self.stream = stream if stream is not None else sys.stdout
        self.n = int(done)  # units finished before this run (a resumed campaign)
        self.t0 = time.perf_counter()
        self._next = every
        while every > 0 and self._next <= self.n / max(self.total, 1) + 1e-12:
            self._next += every
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.kind = force or ("rich" if tty else "plain")
        self._bar = None
        if quiet or self.kind != "rich":
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn)

        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(unit), TimeElapsedColumn(),
                                 console=Console(file=self.stream), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(label, total=self.total, completed=self.n)

    def advance(self, description: str = "") -> None:
        self.n += 1
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=description or self.label)
            return
        frac = self.n / max(self.total, 1)
        if self.every <= 0 or frac + 1e-12 >= self._next or self.n == self.total:
            extra = f"  {description}" if (description and self.every <= 0) else ""
            print(f"  {self.n}/{self.total} {self.unit} ({100 * frac:.0f}%), "
                  f"{time.perf_counter() - self.t0:.1f}s{extra}", file=self.stream, flush=True)
            while self.every > 0 and self._next <= frac + 1e-12:
                self._next += self.every

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
