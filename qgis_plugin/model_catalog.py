"""Installed models: ``<QGIS profile>/rsp_models/*.rspmodel`` plus the bundled ones.

Bundled models live in ``<plugin>/models/`` (zip install) or ``resources/models/`` (source checkout); they are
read-only (cannot be removed from the manager). A folder that does not exist simply contributes no models, so the
plugin works before the demo model is added. Metadata is read with :func:`engine.model_file.read_model_info`
(standard library only, no torch); an unreadable file is listed with its error instead of being hidden. The bundled
start model (:func:`bundled_start_model`) is where fine-tuning starts unless the analyst chooses another start.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine_locator import ensure_engine_importable
from .plugin_paths import bundled_models_dirs

USER_MODELS_DIRNAME = "rsp_models"
MODEL_SUFFIX = ".rspmodel"
DEMO_MODEL_NAME = "demo_lite_potsdam"  # the bundled demo model (segments the bundled Potsdam sample)
# fine-tuning's default start, best first: training.finetune.start.DEFAULT_START_MODELS without the suffix
START_MODEL_NAMES = ("general_lite", DEMO_MODEL_NAME)


@dataclass(frozen=True)
class ModelEntry:
    """One model file: ``info`` is its ``engine.model_file.ModelInfo``, or None with ``error`` when unreadable."""

    path: str
    info: Any
    error: str | None
    bundled: bool

    @property
    def name(self) -> str:
        """The file name without its suffix (what the dialogs list)."""
        return Path(self.path).stem


def user_models_dir() -> Path:
    """``<active QGIS profile folder>/rsp_models`` (created on demand)."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / USER_MODELS_DIRNAME


def read_entry(path: str | os.PathLike[str], bundled: bool = False) -> ModelEntry:
    """The entry for one model file: its metadata, or the reason it cannot be read."""
    ensure_engine_importable()
    from engine.model_file import ModelFileError, read_model_info

    try:
        return ModelEntry(os.fspath(path), read_model_info(path), None, bundled)
    except ModelFileError as exc:
        return ModelEntry(os.fspath(path), None, str(exc), bundled)


def list_models(user_dir: Path | None = None, bundled_dirs: list[Path] | None = None) -> list[ModelEntry]:
    """User models first (sorted by name), then bundled ones; a file name present in both is listed once (user)."""
    user_dir = user_dir if user_dir is not None else user_models_dir()
    bundled_dirs = bundled_dirs if bundled_dirs is not None else bundled_models_dirs()
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for folder, bundled in [(user_dir, False)] + [(d, True) for d in bundled_dirs]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
            if path.name in seen or path.name.startswith("."):  # hidden: a model file being written (engine.atomic)
                continue
            seen.add(path.name)
            entries.append(read_entry(path, bundled))
    return entries


def _bundled(names: tuple[str, ...]) -> str | None:
    for name in names:
        for folder in bundled_models_dirs():
            path = folder / f"{name}{MODEL_SUFFIX}"
            if path.is_file():
                return str(path)
    return None


def bundled_demo_model() -> str | None:
    """The bundled demo model file; None when the plugin has none."""
    return _bundled((DEMO_MODEL_NAME,))


def bundled_start_model() -> str | None:
    """Fine-tuning's default start: the first of :data:`START_MODEL_NAMES` bundled (as ``training finetune`` picks
    with no ``--init``); None when the plugin has none."""
    return _bundled(START_MODEL_NAMES)


class ModelRemoveError(Exception):
    """A bundled model cannot be removed; only models in the profile's rsp_models folder can."""


def remove_model(entry: ModelEntry, user_dir: Path | None = None) -> None:
    """Delete a user-installed model file."""
    user_dir = user_dir if user_dir is not None else user_models_dir()
    if entry.bundled or Path(entry.path).resolve().parent != user_dir.resolve():
        raise ModelRemoveError(f"{entry.path} is bundled with the plugin and cannot be removed")
    os.remove(entry.path)


def import_command(source: str, user_dir: Path | None = None) -> tuple[list[str], str]:
    """Engine arguments that import ``source`` (a released RSP/mmseg checkpoint or a model file) into the models
    folder, and the destination path. Run with the engine runner (``<python> -m engine import ...``)."""
    user_dir = user_dir if user_dir is not None else user_models_dir()
    user_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem
    dest = user_dir / f"{stem}{MODEL_SUFFIX}"
    return ["import", source, "--output", str(dest)], str(dest)


def holdout_of(info: Any) -> dict[str, Any] | None:
    """The hold-out evaluation a fine-tuned model file carries (``provenance["holdout"]``: ``per_class``,
    ``holdout_pixels``, ...), or None for a model without one (an imported or bundled model)."""
    provenance = getattr(info, "provenance", None)
    holdout = provenance.get("holdout") if isinstance(provenance, dict) else None
    return holdout if isinstance(holdout, dict) else None


def format_metric(value: Any) -> str:
    """A percentage metric as the dialogs show it (``84.5``); ``n/a`` for a missing (NaN/None) value."""
    return "n/a" if value is None or value != value else f"{float(value):.1f}"


def format_info_html(entry: ModelEntry, brief: bool = False) -> str:
    """Metadata as HTML for the dialogs: classes with colour swatches first, then bands, GSD, tile size, provenance.

    A fine-tuned model's metrics are labelled as hold-out metrics (measured on spatially separate blocks); without
    ``brief`` its per-class F1 follows.

    ``brief`` (the Segment dialog): the training data and description are cut to one short line each; the dialog
    shows the whole text as the tooltip and the model manager shows it in full.
    """
    if entry.info is None:
        return f"<b>{html.escape(entry.name)}</b><br><span style='color:#b00'>{html.escape(entry.error or '')}</span>"
    info = entry.info
    # Inline swatches, not a table: a word-wrapped QLabel sizes itself wrongly around a table and showed one row.
    swatches = " &nbsp; ".join(
        f"<span style='background-color:rgb({r},{g},{b});'>&nbsp;&nbsp;&nbsp;&nbsp;</span>&nbsp;{i}&nbsp;"
        + html.escape(name).replace(" ", "&nbsp;")
        for i, (name, (r, g, b)) in enumerate(zip(info.class_names, info.colors, strict=True))
    )
    gsd = f"{info.gsd_m:g} m/px" if info.gsd_m else "raster's own resolution"
    metrics = ", ".join(f"{k} {v:g}" for k, v in info.metrics.items()) or "not stated"
    holdout = holdout_of(info) if info.metrics else None
    metrics_label = "Hold-out metrics" if holdout else "Metrics"
    per_class = ""
    if holdout and not brief and isinstance(holdout.get("per_class"), list):
        per_class = "<br>Per-class F1 (hold-out): " + html.escape(
            ", ".join(f"{row.get('class')} {format_metric(row.get('F1'))}" for row in holdout["per_class"])
        )
    source = "bundled" if entry.bundled else "installed"
    dataset, description = info.dataset or "not stated", info.description

    def cut(text: str, limit: int) -> str:
        return text if not brief or len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + " …"

    return (
        f"<b>{html.escape(entry.name)}</b> ({source}, {html.escape(info.arch)})<br>"
        f"{swatches}<br>"
        f"Bands: {', '.join(info.bands)} &nbsp; values {info.value_range[0]:g}..{info.value_range[1]:g} &nbsp; "
        f"GSD: {gsd} &nbsp; tile {info.tile_size} px, stride {info.stride} px<br>"
        f"{metrics_label}: {html.escape(metrics)} &nbsp; trained on: {html.escape(cut(dataset, 60))}{per_class}<br>"
        f"<i>{html.escape(cut(description, 120))}</i>"
    )
