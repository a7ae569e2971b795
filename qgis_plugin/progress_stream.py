"""Decoding the engine's JSON-lines progress stream (``python -m engine predict`` stdout).

One JSON object per line: ``{"event": "progress", "done": k, "total": n, "eta_s": s}``,
``{"event": "done", "outputs": {...}, "classes": [...]}``, ``{"event": "error", "message": ..., "hint": ...}``.
Event names and output roles are the engine's (:mod:`engine.events`, standard library only, imported here in
QGIS's own Python). A well-formed event of another name becomes :class:`OtherEvent`; a line that is not a JSON
object, or an event missing its fields, becomes :class:`MalformedLine` and is ignored by the runner (with a log
entry), so a stray print in the engine never breaks a run. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .engine_locator import ensure_engine_importable

ensure_engine_importable()

from engine import events  # noqa: E402  (found by ensure_engine_importable)


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` work units (windows, or training iterations) finished; ``eta_s`` seconds left, or None
    when unknown; ``raw`` the whole event (training adds ``iteration``, ``loss`` and ``lr``; not compared)."""

    done: int
    total: int
    eta_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def percent(self) -> float:
        """0..100."""
        return 100.0 * self.done / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class DoneEvent:
    """The run finished: ``outputs`` maps an output role of :mod:`engine.events` (``"labels"``, ``"confidence"``,
    ``"vector"``) to a path."""

    outputs: dict[str, str]
    classes: list[Any] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> str | None:
        """Path of the class raster, None when the engine reported none."""
        return self.outputs.get(events.LABELS)

    @property
    def confidence(self) -> str | None:
        """Path of the confidence raster, None when not requested."""
        return self.outputs.get(events.CONFIDENCE)

    @property
    def vector(self) -> str | None:
        """Path of the polygon GeoPackage, None when not requested."""
        return self.outputs.get(events.VECTOR)


@dataclass(frozen=True)
class ErrorEvent:
    """The engine failed and said why (``message``) and what to do (``hint``)."""

    message: str
    hint: str = ""


@dataclass(frozen=True)
class OtherEvent:
    """A well-formed event of another kind (kept for the log)."""

    name: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class MalformedLine:
    """A stdout line that is not a valid event: ``text`` as read, ``reason`` why it was rejected."""

    text: str
    reason: str


EngineEvent = ProgressEvent | DoneEvent | ErrorEvent | OtherEvent | MalformedLine


def parse_line(line: str) -> EngineEvent | None:
    """Decode one line; None for a blank line, :class:`MalformedLine` for anything that is not a valid event."""
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return MalformedLine(text, f"not JSON: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return MalformedLine(text, "not a JSON object with an 'event' field")
    name = data["event"]
    try:
        if name == events.PROGRESS:
            eta = data.get("eta_s")
            return ProgressEvent(int(data["done"]), int(data["total"]), None if eta is None else float(eta), data)
        if name == events.DONE:
            outputs = data.get("outputs") or {}
            if not isinstance(outputs, dict):
                return MalformedLine(text, "'outputs' is not an object")
            return DoneEvent({str(k): str(v) for k, v in outputs.items() if v}, list(data.get("classes") or []), data)
        if name == events.ERROR:
            return ErrorEvent(str(data.get("message") or "the engine reported an error"), str(data.get("hint") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        return MalformedLine(text, f"bad {name!r} event: {exc!r}")
    return OtherEvent(name, data)


class LineSplitter:
    """Splits chunks of bytes (as they arrive from a pipe) into text lines; keeps a partial last line for later."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Every complete line in ``pending + chunk`` (without the newline)."""
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [raw.decode("utf-8", errors="replace") for raw in lines]

    def flush(self) -> list[str]:
        """A last line that had no newline (call once the process has exited)."""
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", errors="replace")] if rest.strip() else []
