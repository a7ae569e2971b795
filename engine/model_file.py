"""The self-describing model file (``*.rspmodel``): one file carries the weights and everything needed to run them.

Format: a `safetensors <https://github.com/huggingface/safetensors>`_ file. Its tensors are the segmentor's
inference state dict (``backbone.*``, ``decode_head.*``; the auxiliary head is not stored). Its string metadata holds
one entry, ``"rsp_model"``, a JSON object with the fields of :class:`ModelInfo`. Loading never unpickles anything.

The metadata can be read with the standard library only (:func:`read_model_info`): the QGIS plugin shows a model's
classes, colours, GSD and tile size without importing torch. Weights are written and read by
:func:`save_model_file` and :func:`load_model_file`, which import torch lazily.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from engine.atomic import temporary_path
from engine.errors import ModelFileError as ModelFileError  # raised here, defined below every layer

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.models.segmentor import UperNet

MODEL_FILE_SUFFIX = ".rspmodel"
FORMAT_NAME = "rsp-qgis-model"
FORMAT_VERSION = 1  # bump when a field changes meaning; readers refuse newer versions
METADATA_KEY = "rsp_model"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class ModelInfo:
    """Everything needed to run a model, stored next to its weights.

    Attributes:
        arch: network name understood by ``engine.models.build_segmentor`` (e.g. ``"rsp_swin_t"``).
        num_classes: number of output channels (logits) of the network.
        class_names: one name per class id, ``len == num_classes``.
        colors: one ``(r, g, b)`` 0..255 triple per class id.
        bands: names of the input channels in the order the network expects them, e.g. ``("red", "green", "blue")``
            or ``("nir", "red", "green")`` for Potsdam IRRG. Raster bands are matched to these by colour
            interpretation unless the analyst maps them explicitly.
        value_range: ``(low, high)`` range of the raw pixel values the network was trained on (``(0, 255)`` for
            8-bit imagery). Rasters of another range are rescaled linearly onto it (see the engine's ``--value-max``).
        mean: per-band mean subtracted after scaling, in ``value_range`` units.
        std: per-band standard deviation divided after subtracting the mean, in ``value_range`` units.
        gsd_m: ground sample distance the network was trained at, metres per pixel; ``None`` when the training data
            had no single GSD (iSAID), in which case rasters are processed at their own resolution.
        tile_size: sliding-window size in pixels (square windows).
        stride: sliding-window step in pixels (``stride < tile_size`` means overlap).
        ignore_index: label value ignored in training and metrics (``None`` when none), not a predicted class.
        dataset: training data set, free text (e.g. ``"ISPRS Potsdam (IRRG)"``).
        metrics: measured quality, e.g. ``{"mF1": 89.94}``; empty when unknown. Say on what data in ``description``.
        description: one paragraph for the analyst: what the model is for and its limits.
        provenance: where the weights came from: ``source`` (file name or training run), ``sha256`` of that source,
            ``created`` (ISO date), ``tool`` (what wrote this file) and anything else worth keeping.
        format_version: version of this file format the metadata follows.
    """

    arch: str
    num_classes: int
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    bands: tuple[str, ...] = ("red", "green", "blue")
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = (123.675, 116.28, 103.53)
    std: tuple[float, ...] = (58.395, 57.12, 57.375)
    gsd_m: float | None = None
    tile_size: int = 512
    stride: int = 384
    ignore_index: int | None = None
    dataset: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so that equal infos compare equal after a round trip.
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.colors) != self.num_classes:
            problems.append(f"{len(self.colors)} colours for {self.num_classes} classes")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.colors):
            problems.append("colours must be (r, g, b) triples in 0..255")
        if not self.bands:
            problems.append("at least one input band is needed")
        if len(self.mean) != len(self.bands) or len(self.std) != len(self.bands):
            problems.append(f"mean/std need one value per band ({len(self.bands)})")
        if any(s <= 0 for s in self.std):
            problems.append("std values must be > 0")
        if len(self.value_range) != 2 or self.value_range[1] <= self.value_range[0]:
            problems.append(f"value_range must be (low, high) with high > low, got {self.value_range}")
        if self.gsd_m is not None and not self.gsd_m > 0:
            problems.append(f"gsd_m must be > 0 or None, got {self.gsd_m}")
        if not (1 <= self.stride <= self.tile_size):
            problems.append(f"stride must be in 1..tile_size ({self.tile_size}), got {self.stride}")
        if self.format_version > FORMAT_VERSION:
            problems.append(
                f"format version {self.format_version} is newer than this engine reads ({FORMAT_VERSION}): "
                "update the plugin/engine"
            )
        if problems:
            raise ModelFileError("invalid model metadata: " + "; ".join(problems))

    def to_json(self) -> str:
        """The metadata as the JSON text stored in the file (with ``format``; keys sorted)."""
        data = asdict(self)
        data["format"] = FORMAT_NAME
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse stored metadata; :class:`ModelFileError` for bad JSON, another format, a newer version or unknown
        fields."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model metadata is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT_NAME:
            raise ModelFileError(f"not an {FORMAT_NAME} file: metadata lacks format={FORMAT_NAME!r}")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"model file format version {version} is newer than this engine reads ({FORMAT_VERSION}); "
                "update the plugin/engine to use it"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFileError(f"unknown model metadata fields {unknown}; update the plugin/engine")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelFileError(f"incomplete model metadata: {exc}") from exc


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Read a model file's metadata without torch (standard library only).

    Raises:
        ModelFileError: the file is missing, not a safetensors file, or its metadata is invalid or too new.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ModelFileError(f"model file is truncated or empty: {path}")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len == 0 or header_len > _MAX_HEADER_BYTES or header_len > os.path.getsize(path) - 8:
                raise ModelFileError(f"not a model file (bad safetensors header): {path}")
            header = json.loads(f.read(header_len).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc
    metadata = header.get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} is a safetensors file without RSP model metadata; "
            "make a model file with `python -m engine import` or `python -m training export`"
        )
    return ModelInfo.from_json(metadata[METADATA_KEY])


def save_model_file(path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """Write ``state_dict`` and ``info`` to ``path`` atomically (temporary name, then rename).

    ``auxiliary_head.*`` tensors are dropped: they are not used at inference.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in state_dict.items() if not k.startswith("auxiliary_head.")
    }
    tmp = temporary_path(path)  # the engine's hidden temporary name, which the plugin removes after a kill
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: info.to_json()})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a normal file mode, readable by the QGIS user (the writer creates 0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a model file (no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"model file {path} is corrupt or truncated ({exc}); copy or export it again") from exc


def load_model_file(
    path: str | os.PathLike[str], device: str = "cpu", info: ModelInfo | None = None
) -> tuple[UperNet, ModelInfo]:
    """Build the network a model file describes, load its weights strictly, and return it in eval mode.

    Args:
        path: model file.
        device: torch device name to move the network to.
        info: the file's metadata when the caller has read it already (:func:`read_model_info`); read otherwise.

    Returns:
        ``(network, info)``.

    Raises:
        ModelFileError: unreadable file, or weights that do not match the described network (the message names the
            missing, unexpected and mis-shaped keys).
    """
    if info is None:
        info = read_model_info(path)
    state = read_state_dict(path)
    from engine.models import ARCHS, build_segmentor, load_state_dict_strict

    if info.arch not in ARCHS:
        raise ModelFileError(
            f"model file {path} is for architecture {info.arch!r}, which this engine does not have "
            f"({', '.join(ARCHS)}); update the plugin/engine, or export the model for one of these"
        )
    model = build_segmentor(info.arch, info.num_classes, aux_head=False)
    try:
        load_state_dict_strict(model, state)
    except Exception as exc:  # the loader's own error says which keys; re-raise in this file's terms
        raise ModelFileError(f"model file {path} does not match arch {info.arch!r}: {exc}") from exc
    return model.to(device).eval(), info
