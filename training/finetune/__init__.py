"""Fine-tuning on an analyst's own labels and honest accuracy figures.

``python -m training finetune`` (:mod:`training.finetune.cli`) trains a model file from a raster and polygons (or a
class raster) digitised over it, holds out spatially separate blocks, and measures them with the engine's own
sliding-window inference. ``python -m training accuracy`` compares any class raster with reference labels.

Modules:

- :mod:`~training.finetune.classes`: class names, codes and colours (``--classes`` JSON or the labels' values).
- :mod:`~training.finetune.labels`: polygons (any OGR format and CRS) or a class raster → class ids on a grid.
- :mod:`~training.finetune.split`: labelled blocks, the spatial hold-out, training chips that avoid it.
- :mod:`~training.finetune.chips`: the chip dataset, read window by window, with the training augmentations.
- :mod:`~training.finetune.start`: the start network (a model file, an RSP backbone, or scratch) and its input facts.
- :mod:`~training.finetune.run`: one fine-tuning run, start to model file (:func:`finetune`).
- :mod:`~training.finetune.holdout`: hold-out evaluation through ``engine.predict``.
- :mod:`~training.finetune.accuracy`: ``training accuracy``.
- :mod:`~training.finetune.cli`: the two commands, speaking the engine's JSON-lines contract.
"""
