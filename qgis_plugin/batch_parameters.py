"""What one run of ``python -m engine batch`` needs, gathered from the "Segment several rasters" dialog (no Qt).

Decision (outputs): one output set per input in the chosen folder, named after the input
(``<input>_classes.tif``, ``_polygons.gpkg``), or ``mosaic_classes.tif`` for "as one mosaic"; the folder defaults to
the project's folder, never a temporary one. Inputs whose outputs exist are skipped by the engine (resume).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .parameters import (
    DEFAULT_BATCH_SIZE,
    DEVICES,
    GSD_MODEL,
    MAX_BATCH_SIZE,
    CheckedParameters,
    engine_options,
    parse_gsd_text,
)

RASTER_EXTENSIONS = engine_options.RASTER_EXTENSIONS  # what a folder input contributes


def folder_rasters(folder: str) -> list[str]:
    """The files of ``folder`` the engine takes as rasters (not recursive), sorted."""
    if not os.path.isdir(folder):
        return []
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names if n.lower().endswith(RASTER_EXTENSIONS)]


@dataclass(frozen=True)
class BatchParameters(CheckedParameters):
    """One run of ``python -m engine batch``.

    Attributes:
        inputs: raster files (the ticked layers' files) and folders.
        model_path: ``*.rspmodel`` file.
        output_dir: where the outputs and ``batch_summary.json`` go.
        vector: also write polygons.
        mosaic: segment the inputs as one VRT mosaic.
        gsd: ``model``, ``native`` or metres as text.
        device: ``cpu`` or ``cuda``.
        batch_size: windows per forward pass.
        overwrite: run inputs again whose outputs exist.
    """

    inputs: tuple[str, ...]
    model_path: str
    output_dir: str
    vector: bool = False
    mosaic: bool = False
    gsd: str = GSD_MODEL
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE
    overwrite: bool = False

    def problems(self) -> list[str]:
        """Every reason this run cannot start, in words an analyst can act on (empty when valid)."""
        out: list[str] = []
        if not self.inputs:
            out.append("Tick at least one raster layer, or choose a folder of rasters.")
        for path in self.inputs:
            if os.path.isdir(path) and not folder_rasters(path):
                out.append(f"The folder {path} holds no rasters (.tif, .vrt, .jp2, …): choose another folder.")
            elif not os.path.exists(path):
                out.append(f"{path} does not exist.")
        if not self.model_path or not os.path.isfile(self.model_path):
            out.append("Choose a model (install one in the Model manager).")
        if not self.output_dir:
            out.append("Choose the output folder (or save the project: its folder is the default).")
        elif not os.path.isdir(self.output_dir):
            out.append(f"The output folder does not exist: {self.output_dir}")
        elif not os.access(self.output_dir, os.W_OK):
            out.append(f"The output folder is not writable: {self.output_dir}. Choose another folder.")
        if parse_gsd_text(self.gsd) is None:
            out.append(f"GSD must be 'model', 'native' or a number of metres > 0, got {self.gsd!r}.")
        if self.device not in DEVICES:
            out.append(f"Device must be one of {', '.join(DEVICES)}.")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            out.append(f"Batch size must be 1..{MAX_BATCH_SIZE}.")
        return out

    def engine_args(self) -> list[str]:
        """Arguments after ``<python> -m engine``: an argument list for QProcess, never a shell string."""
        args = ["batch", "--model", self.model_path, "--output-dir", self.output_dir]
        args += ["--gsd", parse_gsd_text(self.gsd) or self.gsd, "--device", self.device]
        args += ["--batch-size", str(self.batch_size)]
        args += [flag for flag, on in (("--vector", self.vector), ("--mosaic", self.mosaic),
                                       ("--overwrite", self.overwrite)) if on]  # fmt: skip
        return [*args, *self.inputs]
