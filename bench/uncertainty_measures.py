"""``python -m bench.uncertainty_measures``: which per-pixel uncertainty points at the model's mistakes best.

The measure behind ``--uncertainty`` and ``python -m training suggest`` was chosen with this measurement. The demo
model (``resources/models/demo_lite_potsdam.rspmodel``) segments the real Potsdam crop it was trained on the left
3/4 of (``tests/data/potsdam``, 512², 5 cm, the model's own GSD); only the held-out right quarter (columns 384-511,
labels from ``*_label_6cls_ignore255_DERIVED.png``, ignore pixels left out) is scored. The class probabilities are the
engine's blended ones (:func:`engine.inference.slide_inference`, smooth blending, the model's tile and stride).

Measures, each 0..1: ``margin`` = 1 - (p1 - p2), ``least_confidence`` = 1 - p1, ``entropy`` = -Σ p log p / log K.
Scores: the pixel AUROC of each measure for telling wrong pixels from right ones, and the Spearman rank correlation
between a square's mean measure and its error rate, over the squares of :data:`SQUARE` pixels of the held-out part
(what ``suggest`` ranks). One image and one small model: it decides between near-equal measures on cost and range
when the scores tie, not more. Runs in a few seconds on CPU; prints a JSON summary.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image

from engine.inference import load_network, slide_inference
from engine.model_file import read_model_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "resources", "models", "demo_lite_potsdam.rspmodel")
DATA = os.path.join(ROOT, "tests", "data", "potsdam")
IMAGE = os.path.join(DATA, "2_10_0_0_512_512_rgb.png")
LABELS = os.path.join(DATA, "2_10_0_0_512_512_label_6cls_ignore255_DERIVED.png")
HELD_OUT_COL = 384  # the demo model trained on columns 0-383
SQUARE = 32  # side of the squares scored by rank correlation, pixels
IGNORE = 255


def measures(probs: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: (H, W) measure}`` of ``(K, H, W)`` probabilities."""
    top = np.sort(probs, axis=0)
    k = probs.shape[0]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=0) / np.log(k)
    return {"margin": 1.0 - (top[-1] - top[-2]), "least_confidence": 1.0 - top[-1], "entropy": entropy}


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney U with mid-ranks for ties)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size, np.float64)
    ranks[order] = np.arange(1, score.size + 1)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # mid-ranks
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    """Run the measurement and print the summary."""
    info = read_model_info(MODEL)
    model, _ = load_network(MODEL, "cpu")
    rgb = np.asarray(Image.open(IMAGE).convert("RGB")).transpose(2, 0, 1).astype(np.float32)
    x = (torch.from_numpy(rgb) - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    with torch.no_grad():
        probs = slide_inference(model, x[None], info.tile_size, info.stride, info.num_classes, "smooth")[0].numpy()
    truth = np.asarray(Image.open(LABELS))
    probs, truth = probs[:, :, HELD_OUT_COL:], truth[:, HELD_OUT_COL:]
    labelled = truth != IGNORE
    wrong = probs.argmax(axis=0) != truth
    result: dict[str, object] = {
        "pixels": int(labelled.sum()),
        "error_rate": round(float(wrong[labelled].mean()), 4),
        "square_px": SQUARE,
    }
    h, w = truth.shape
    for name, value in measures(probs).items():
        pixel = auroc(value[labelled], wrong[labelled])
        means, errors = [], []
        for r in range(0, h - SQUARE + 1, SQUARE):
            for c in range(0, w - SQUARE + 1, SQUARE):
                keep = labelled[r : r + SQUARE, c : c + SQUARE]
                if keep.mean() < 0.5:
                    continue
                means.append(value[r : r + SQUARE, c : c + SQUARE][keep].mean())
                errors.append(wrong[r : r + SQUARE, c : c + SQUARE][keep].mean())
        result[name] = {
            "pixel_auroc": round(pixel, 4),
            "square_spearman": round(spearman(np.array(means), np.array(errors)), 4),
            "squares": len(means),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
