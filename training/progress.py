"""A dependency-free progress bar with rate and ETA, written to stderr (one line, redrawn; plain lines when piped)."""

from __future__ import annotations

import sys
import time
import typing

BAR_WIDTH = 24
MIN_REDRAW_S = 0.5


def format_seconds(seconds: float) -> str:
    """``1:02:03`` style duration."""
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress over ``total`` steps: ``update(done, **fields)`` redraws at most every 0.5 s and always at the end.

    Args:
        total: number of steps. label: prefix. stream: where to write (stderr by default).
        enabled: ``False`` silences it (non-zero ranks under DDP).
    """

    def __init__(self, total: int, label: str = "", stream: typing.TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.start_done = 0
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def reset_origin(self, done: int) -> None:
        """Measure the rate from ``done`` on (after a resume)."""
        self.start, self.start_done = time.monotonic(), done

    def update(self, done: int, force: bool = False, **fields: typing.Any) -> None:
        """Record ``done`` steps; redraw with ``fields`` (e.g. loss, lr) when due, at the end, or when ``force``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and done < self.total and now - self._last < MIN_REDRAW_S:
            return
        self._last = now
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        filled = int(BAR_WIDTH * done / self.total)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        eta_text = format_seconds(eta) if eta == eta else "--:--"
        line = (
            f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total} "
            f"{rate:.2f} it/s elapsed {format_seconds(elapsed)} ETA {eta_text} {extra}"
        )
        if self._tty:
            self.stream.write("\r" + line + ("\n" if done >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
