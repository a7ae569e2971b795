"""Whether a fine-tuned model learned anything: the warnings a run ends with, from its hold-out confusion matrix.

A run always writes its model; these warnings say when the analyst should not trust it yet:

- **classes never predicted**: a class the model was trained on that it predicts on no held-out pixel (a model that
  collapsed onto the majority class predicts one class only);
- **no better than the majority class**: the hold-out mIoU is not above that of always answering the most frequent
  training class (mIoU as mmseg computes it: classes whose union of prediction and reference is empty are left out);
- **classes smaller than one chip** (before training): fewer labelled pixels than one training chip holds.

Each message names the classes and says what to do (more polygons of them, in several places; more iterations).
"""

from __future__ import annotations

import typing

import numpy as np

from training.metrics import summarize

MORE_ITERATIONS = 2  # the advice: this many times the run's iterations


def majority_baseline(
    counts: np.ndarray, train_pixels: np.ndarray, names: typing.Sequence[str]
) -> dict[str, typing.Any]:
    """Hold-out OA, kappa, mIoU and mF1 of always answering the most frequent training class.

    Args:
        counts: ``(K, K)`` hold-out confusion matrix ``[reference, prediction]``.
        train_pixels: ``(K,)`` training pixels per class.
        names: class names.
    """
    k = int(np.argmax(train_pixels))
    always = np.zeros_like(counts)
    always[:, k] = counts.sum(axis=1)  # every reference pixel predicted as k
    s = summarize(always, names)
    return {"class": names[k], **{m: s[m] for m in ("OA", "kappa", "mIoU", "mF1")}}


def outcome_warnings(
    counts: np.ndarray, train_pixels: np.ndarray, names: typing.Sequence[str], miou: float, iterations: int
) -> list[str]:
    """The warnings of a finished run (see the module docstring); empty when the model looks sound.

    Args:
        counts: ``(K, K)`` hold-out confusion matrix ``[reference, prediction]``.
        train_pixels: ``(K,)`` training pixels per class.
        names: class names.
        miou: the model's hold-out mIoU (×100).
        iterations: the run's iterations (the advice suggests more).
    """
    if counts.sum() == 0:
        return []
    predicted = counts.sum(axis=0) > 0
    trained = train_pixels > 0
    never = [names[i] for i in np.flatnonzero(trained & ~predicted)]
    more = f"--iters {max(1, iterations) * MORE_ITERATIONS}"
    out = []
    if never:
        out.append(
            f"on the held-out blocks the model never predicts {', '.join(never)} ({len(never)} of the "
            f"{int(trained.sum())} classes it was trained on): digitise more polygons of "
            f"{'them' if len(never) > 1 else 'it'}, in several places, or train longer ({more})"
        )
    base = majority_baseline(counts, train_pixels, names)
    if not miou > base["mIoU"]:
        out.append(
            f"the model does no better on the held-out blocks than always answering {base['class']} (mIoU {miou:.1f} "
            f"vs {base['mIoU']:.1f}): digitise more polygons of the other classes, or train longer ({more})"
        )
    return out


def small_class_warnings(train_pixels: np.ndarray, names: typing.Sequence[str], chip: int) -> list[str]:
    """A warning for each class with labelled training pixels, but fewer than one ``chip``² chip holds."""
    return [
        f"class {names[i]} has only {int(n)} labelled training pixels, fewer than one {chip}×{chip} chip holds: "
        "it may be learnt poorly (digitise more of it, in several places)"
        for i, n in enumerate(train_pixels)
        if 0 < n < chip * chip
    ]
