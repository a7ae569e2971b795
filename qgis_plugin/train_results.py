"""What the Train model dialog shows of a run: the progress line and the hold-out accuracy table (no Qt).

Pure formatting of the training run's events (``progress`` with ``iteration``/``loss``/``eta_s``; ``done`` with
``metrics``, ``per_class`` and ``majority``), so the dialog module holds only the dialog. After **Continue training**
the table shows the previous and the new model side by side (:func:`comparison_table`); each model's figures are
those of its own run's held-out blocks (more labels change which blocks are held out), which the table says.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from .model_catalog import format_metric
from .progress_stream import ProgressEvent

SWATCH = "&nbsp;&nbsp;&nbsp;&nbsp;"
HEADLINE = ("OA", "kappa", "mIoU", "mF1")
SAME_HOLDOUT_NOTE = (  # two short lines: the dialog's label does not wrap
    "Each model is measured on the blocks held out in its own run, and added labels",
    "change which blocks those are: compare each model with its own 'always answering' rows too.",
)


@dataclass(frozen=True)
class HoldoutFigures:
    """A finished run's hold-out figures, kept to compare with the next run (Continue training).

    Attributes:
        model_name: the model's name.
        metrics: ``{"OA", "kappa", "mIoU", "mF1"}`` (×100) of the ``done`` event.
        majority: the ``done`` event's ``majority`` (``class``, ``OA``, ``kappa``, ``mIoU``, ``mF1``), or None.
        holdout_pixels: how many labelled pixels were held out, when known.
    """

    model_name: str
    metrics: dict[str, Any]
    majority: dict[str, Any] | None = None
    holdout_pixels: int | None = None


def _difference(old: Any, new: Any) -> str:
    """``"+9.1"`` / ``"-2.0"``; ``""`` when either figure is missing (None or NaN)."""
    if format_metric(old) == "n/a" or format_metric(new) == "n/a":
        return ""
    return f"{float(new) - float(old):+.1f}"


def comparison_table(previous: HoldoutFigures, new: HoldoutFigures) -> str:
    """The hold-out figures of two models side by side as an HTML table: OA, kappa, mIoU and mF1 (with the change),
    the most frequent class and what always answering it scores, and the held-out pixels; a note says how to read it.

    Narrow on purpose (the dialog's label does not wrap): the models' names are in the title, not the header.
    """
    cell = "<td align='right'>&nbsp;{}&nbsp;</td>"

    def row(label: str, old: str, now: str, change: str = "") -> str:
        return f"<tr><td>{label}&nbsp;</td>{cell.format(old)}{cell.format(now)}{cell.format(change)}</tr>"

    rows = ["<tr><th></th><th align='right'>&nbsp;previous</th><th align='right'>&nbsp;new</th>"
            "<th align='right'>&nbsp;change</th></tr>"]  # fmt: skip
    for key in HEADLINE:
        old, now = previous.metrics.get(key), new.metrics.get(key)
        rows.append(row(key, format_metric(old), format_metric(now), _difference(old, now)))
    majorities = (previous.majority or {}, new.majority or {})
    rows.append(row("most frequent class", *(html.escape(str(m.get("class", "n/a"))) for m in majorities)))
    for key in ("OA", "mIoU"):
        rows.append(row(f"&nbsp;&nbsp;{key} always answering it", *(format_metric(m.get(key)) for m in majorities)))
    pixels = [f"{p:,}" if p else "n/a" for p in (previous.holdout_pixels, new.holdout_pixels)]
    rows.append(row("held-out pixels", *pixels))
    return (
        f"<table cellspacing='0' cellpadding='2'>{''.join(rows)}</table>"
        f"<small>{'<br>'.join(html.escape(line) for line in SAME_HOLDOUT_NOTE)}</small><br>"
    )


def format_eta(seconds: float | None) -> str:
    """``", about 40 s left"`` / ``", about 3 min left"``; ``""`` when unknown."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 90:
        return f", about {seconds:.0f} s left"
    return f", about {seconds / 60:.0f} min left"


def progress_text(event: ProgressEvent) -> str:
    """``"Iteration 12 of 600, loss 0.5432, about 2 min left"`` from a training ``progress`` event: ``done`` of
    ``total`` counts the run's iterations, both trainings of a refit together (``iteration`` restarts in the second)."""
    loss = event.raw.get("loss")
    loss_text = f", loss {float(loss):.4f}" if isinstance(loss, int | float) else ""
    return f"Iteration {event.done} of {event.total}{loss_text}{format_eta(event.eta_s)}"


def results_html(
    model_name: str,
    metrics: dict[str, Any],
    per_class: list[dict[str, Any]],
    colors: dict[str, tuple[int, int, int]],
    holdout_pixels: int | None = None,
    majority: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
    previous: HoldoutFigures | None = None,
    refit: bool = False,
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
        previous: the model this run continued from (Continue training): the headline figures of both are shown
            side by side (:func:`comparison_table`) instead of this model's alone.
        refit: the ``done`` event's ``refit``: the saved model was trained again on all labels once the hold-out
            was measured (said under the title).
    """
    where = f", {holdout_pixels:,} labelled pixels" if holdout_pixels else ""
    head = "".join(f"<th align='right'>&nbsp;{k}&nbsp;</th>" for k in HEADLINE)
    values = "".join(f"<td align='right'>{format_metric(metrics.get(k))}</td>" for k in HEADLINE)
    if majority:
        label = f"<td>always {html.escape(str(majority.get('class', '')))}&nbsp;</td>"
        always = "".join(f"<td align='right'>{format_metric(majority.get(k))}</td>" for k in HEADLINE)
        values = f"<td>this model&nbsp;</td>{values}</tr><tr>{label}{always}"
        head = "<th></th>" + head
    headline = f"<table cellspacing='0' cellpadding='2'><tr>{head}</tr><tr>{values}</tr></table>"
    title = f"Hold-out accuracy of {html.escape(model_name)}</b><br>(on blocks kept out of training{where})"
    if previous is not None:
        headline = comparison_table(previous, HoldoutFigures(model_name, metrics, majority, holdout_pixels))
        title = (
            f"Hold-out accuracy, previous and new model</b><br>previous: {html.escape(previous.model_name)}<br>"
            f"new: {html.escape(model_name)} (per class below)"
        )
    if refit:
        title += "<br>then trained again on all labels, held-out blocks included: the saved model learnt from more"
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
        f"<b>{title}{headline}{notes}"
        "<table cellspacing='0' cellpadding='2'><tr><th align='left'>Class</th><th align='right'>&nbsp;F1</th>"
        f"<th align='right'>&nbsp;IoU</th><th align='right'>&nbsp;held-out pixels</th></tr>{''.join(rows)}</table>"
    )
