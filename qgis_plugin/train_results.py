"""What the Train model dialog shows of a run: the progress line and the hold-out accuracy table (no Qt).

Pure formatting of the training run's events (``progress`` with ``iteration``/``loss``/``eta_s``; ``done`` with
``metrics`` and ``per_class``), so the dialog module holds only the dialog.
"""

from __future__ import annotations

import html
from typing import Any

from .model_catalog import format_metric
from .progress_stream import ProgressEvent

SWATCH = "&nbsp;&nbsp;&nbsp;&nbsp;"


def format_eta(seconds: float | None) -> str:
    """``", about 40 s left"`` / ``", about 3 min left"``; ``""`` when unknown."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 90:
        return f", about {seconds:.0f} s left"
    return f", about {seconds / 60:.0f} min left"


def progress_text(event: ProgressEvent) -> str:
    """``"Iteration 12 of 300, loss 0.5432, about 2 min left"`` from a training ``progress`` event."""
    iteration = event.raw.get("iteration", event.done)
    loss = event.raw.get("loss")
    loss_text = f", loss {float(loss):.4f}" if isinstance(loss, int | float) else ""
    return f"Iteration {iteration} of {event.total}{loss_text}{format_eta(event.eta_s)}"


def results_html(
    model_name: str,
    metrics: dict[str, Any],
    per_class: list[dict[str, Any]],
    colors: dict[str, tuple[int, int, int]],
    holdout_pixels: int | None = None,
    majority: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> str:
    """The hold-out accuracy of a finished run as HTML: OA, kappa, mIoU, mF1, then F1/IoU/pixels per class.

    Args:
        model_name: the new model's name.
        metrics: ``{"OA", "kappa", "mIoU", "mF1"}`` (×100) from the ``done`` event.
        per_class: the ``done`` event's ``per_class`` rows (``class``, ``F1``, ``IoU``, ``pixels``; ×100).
        colors: class name → colour, for the swatches.
        holdout_pixels: how many labelled pixels the hold-out had, when known.
        majority: the ``done`` event's ``majority``: the same figures for always answering the most frequent
            training class (``class``, ``OA``, ``kappa``, ``mIoU``, ``mF1``), shown as a second row to compare with.
        warnings: the ``done`` event's ``warnings`` (e.g. classes the model never predicts), shown in red below.
    """
    where = f", {holdout_pixels:,} labelled pixels" if holdout_pixels else ""
    head = "".join(f"<th align='right'>&nbsp;{k}&nbsp;</th>" for k in ("OA", "kappa", "mIoU", "mF1"))
    values = "".join(f"<td align='right'>{format_metric(metrics.get(k))}</td>" for k in ("OA", "kappa", "mIoU", "mF1"))
    if majority:
        label = f"<td>always {html.escape(str(majority.get('class', '')))}&nbsp;</td>"
        always = "".join(
            f"<td align='right'>{format_metric(majority.get(k))}</td>" for k in ("OA", "kappa", "mIoU", "mF1")
        )
        values = f"<td>this model&nbsp;</td>{values}</tr><tr>{label}{always}"
        head = "<th></th>" + head
    notes = "".join(f"<p style='color:#b00000;'>&#9888; {html.escape(w)}</p>" for w in warnings or [])
    rows = []
    for row in per_class:
        name = str(row.get("class", ""))
        r, g, b = colors.get(name, (128, 128, 128))
        rows.append(
            f"<tr><td><span style='background-color:rgb({r},{g},{b});'>{SWATCH}</span>&nbsp;{html.escape(name)}</td>"
            f"<td align='right'>{format_metric(row.get('F1'))}</td><td align='right'>{format_metric(row.get('IoU'))}"
            f"</td><td align='right'>{int(row.get('pixels') or 0):,}</td></tr>"
        )
    return (
        f"<b>Hold-out accuracy of {html.escape(model_name)}</b><br>(on blocks kept out of training{where})"
        f"<table cellspacing='0' cellpadding='2'><tr>{head}</tr><tr>{values}</tr></table>{notes}"
        "<table cellspacing='0' cellpadding='2'><tr><th align='left'>Class</th><th align='right'>&nbsp;F1</th>"
        f"<th align='right'>&nbsp;IoU</th><th align='right'>&nbsp;held-out pixels</th></tr>{''.join(rows)}</table>"
    )
