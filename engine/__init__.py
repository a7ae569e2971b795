"""RSP segmentation engine: models, model files, raster I/O, tiling, stitching, vectorising and the CLI.

Pure Python on numpy, GDAL, torch and timm; never imports qgis or Qt. Importing ``engine`` is cheap: torch is
imported by the submodules that need it, so the QGIS plugin can read model-file metadata without torch.

The modules form layers; a module imports only from its own layer or the layers below it, never upward and never in
a circle (``tests/test_architecture.py`` checks both, lazy imports included):

1. **core** (standard library, numpy at most): ``events``, ``errors``, ``options`` (every run option's choices and
   defaults), ``faults``, ``atomic``, ``journal``, ``console``, ``tiling``, ``classes``, ``bands``, ``precision``,
   ``checkpoints``, ``compile_child``, ``web_tiles``, ``allocator`` (the C allocator of a command-line process).
2. **models** (torch): ``_torch_compat``, ``models/``, ``model_file``.
3. **inputs** (GDAL): ``sources``, ``georef``, ``masks``, ``raster_io``.
4. **outputs**: ``outputs`` (GeoTIFFs, finishing, statistics), ``vectorize``.
5. **request**: ``request`` (what a run is asked, and its prepared context).
6. **compute**: ``blending``, ``compile_plan``, ``inference`` (network loading, precision, compiled window runner).
7. **run**: ``resources``, ``streaming``, ``chunks``, ``resume``, ``predict`` (the API), ``distributed``, ``batch``,
   ``warmup``, ``importer``, ``selfcheck``.
8. **cli**: ``cli``, ``__main__``.
"""

__version__ = "0.1.0"

LAYERS = (
    ("core", ("events", "errors", "options", "faults", "atomic", "journal", "console", "tiling", "classes", "bands",
              "precision", "checkpoints", "compile_child", "web_tiles", "allocator")),
    ("models", ("_torch_compat", "models", "model_file")),
    ("inputs", ("sources", "georef", "masks", "raster_io")),
    ("outputs", ("outputs", "vectorize")),
    ("request", ("request",)),
    ("compute", ("blending", "compile_plan", "inference")),
    ("run", ("resources", "streaming", "chunks", "resume", "predict", "distributed", "batch", "warmup", "importer",
             "selfcheck")),
    ("cli", ("cli", "__main__")),
)  # fmt: skip
