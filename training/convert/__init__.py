"""Converters from the official dataset archives to the patch folders the seed trains on.

``potsdam``: ISPRS Potsdam orthos (IRRG or RGB) + ``5_Labels_all`` → 512² patches, stride 384.
``isaid``: DOTA-v1.0 images + iSAID colour masks → 896² patches, stride 512.
Both check the input layout first, name what is missing, show progress and skip patches already written.
"""

from training.convert.common import ConversionError, colour_to_index, window_starts

__all__ = ["ConversionError", "colour_to_index", "window_starts"]
