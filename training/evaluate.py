"""Evaluation with the seed's test protocol, through the engine's sliding-window inference.

Per image (RSP_SPEC §2, §8): normalise; when ``test_keep_ratio_scale`` is set (iSAID), rescale keep-ratio to fit
that square and pad bottom/right with raw 0 *before* normalising; logits from
``engine.inference.slide_inference`` (``test_tile``/``test_stride`` windows, logits averaged where windows
overlap, mmseg 0.21 ``slide_inference``); logits resized bilinearly to the original size (the padded area included,
as mmseg 0.21 does); softmax. With flip TTA (iSAID, or ``--aug-test``) the same for the horizontally flipped image,
its probabilities flipped back, and the two probability maps averaged. Prediction = argmax.

Metrics come from one confusion matrix over the whole split (:mod:`training.metrics`).
"""

from __future__ import annotations

import os
import sys
import typing

import numpy as np
import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.datasets import SegmentationFolder
from training.metrics import ConfusionMatrix, summarize
from training.progress import Progress
from training.transforms import normalize, rescale_size, resize_image
from training.visualize import comparison


def _logits(model: torch.nn.Module, image: np.ndarray, config: TrainConfig, device: torch.device) -> torch.Tensor:
    """(1, K, H, W) logits for a (H, W, 3) uint8 image at its original size."""
    from engine.inference import slide_inference

    h, w = image.shape[:2]
    work = image
    if config.test_keep_ratio_scale:
        s = config.test_keep_ratio_scale
        work = resize_image(image, rescale_size(h, w, (s, s)))
        ph, pw = max(s - work.shape[0], 0), max(s - work.shape[1], 0)
        work = np.pad(work, ((0, ph), (0, pw), (0, 0)), constant_values=0)  # raw black, before Normalize
    x = torch.from_numpy(normalize(work, config.mean, config.std).transpose(2, 0, 1).copy())[None].to(device)
    logits = slide_inference(model, x, config.test_tile, config.test_stride, config.num_classes, blend="reference")
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)  # (1, K, H, W)
    return logits


@torch.no_grad()
def predict(
    model: torch.nn.Module, image: np.ndarray, config: TrainConfig, device: torch.device, flip: bool
) -> np.ndarray:
    """(H, W) uint8 class ids for a (H, W, 3) uint8 image (see the module docstring)."""
    probs = torch.softmax(_logits(model, image, config, device), dim=1)  # (1, K, H, W)
    if flip:
        flipped = torch.softmax(_logits(model, np.ascontiguousarray(image[:, ::-1]), config, device), dim=1)
        probs = (probs + flipped.flip(-1)) / 2
    return probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def evaluate(
    model: torch.nn.Module,
    config: TrainConfig,
    dataset: SegmentationFolder,
    device: torch.device,
    flip: bool | None = None,
    show_dir: str | None = None,
    stream: typing.TextIO | None = None,
) -> dict[str, typing.Any]:
    """Predict every image of ``dataset``, accumulate one confusion matrix, return :func:`summarize`'s dict.

    Args:
        model: the segmentor (put in eval mode for the run, restored afterwards).
        config: tile, stride, normalisation, ignore index and flip default.
        dataset: the split to evaluate, without a training pipeline.
        device: where the network runs.
        flip: flip TTA; ``None`` = the config's ``flip_test``.
        show_dir: when given, writes ``<name>.png`` = image | prediction | ground truth overlays there.
        stream: where the progress bar goes (stderr by default).
    """
    flip = config.flip_test if flip is None else flip
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(len(dataset.CLASSES), config.ignore_index)
    progress = Progress(len(dataset), "test", stream=stream if stream is not None else sys.stderr)
    if show_dir:
        os.makedirs(show_dir, exist_ok=True)
    for i in range(len(dataset)):
        image, label, name = dataset.load(i)
        pred = predict(model, image, config, device, flip)
        matrix.update(pred, label)
        if show_dir:
            comparison(image, pred, label, dataset.PALETTE, config.ignore_index).save(
                os.path.join(show_dir, name + ".png")
            )
        progress.update(i + 1)
    model.train(was_training)
    summary = summarize(matrix.counts, dataset.CLASSES)
    summary["num_images"] = len(dataset)
    summary["flip"] = flip
    return summary


def save_confusion_png(summary: dict[str, typing.Any], path: str) -> None:
    """Draw the summary's confusion matrix with its class names into the PNG ``path``."""
    from training.visualize import confusion_matrix_image

    confusion_matrix_image(np.asarray(summary["confusion_matrix"]), summary["class_names"]).save(path)


__all__ = ["evaluate", "predict", "save_confusion_png"]
