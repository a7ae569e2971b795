"""RSP segmentation engine: models, model files, raster I/O, tiling, stitching, vectorising and the CLI.

Pure Python on numpy, GDAL, torch and timm; never imports qgis or Qt. Importing ``engine`` is cheap: torch is
imported by the submodules that need it, so the QGIS plugin can read model-file metadata without torch.
"""

__version__ = "0.1.0"
