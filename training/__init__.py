"""Training and evaluation of RSP UperNet models on ISPRS Potsdam and iSAID (the RSP paper's protocol).

Sub-modules: ``config`` (frozen presets), ``convert`` (dataset converters), ``datasets`` and ``transforms`` (data
pipelines), ``losses``, ``schedule`` (optimiser and LR), ``checkpoint``, ``trainer`` (the loop, DDP), ``metrics``,
``evaluate``, ``visualize`` and ``export``. Entry point: ``python -m training``. The networks and the sliding-window
inference come from ``engine``; nothing here imports qgis or Qt.
"""
