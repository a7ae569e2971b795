"""Run one engine prediction and print the process's peak resident memory (MiB) as JSON: used by ``python -m bench``.

``--compile off``: ``auto`` would compile only the larger rasters, and the compiler's own fixed memory would hide the
streaming figure this measures.
"""

from __future__ import annotations

import json
import resource
import sys

from engine.predict import PredictRequest, predict


def peak_rss_mib() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the address space created by ``exec``; ``ru_maxrss``
    (the fallback off Linux) keeps the pre-exec peak of the forked parent, which would report the bench's own size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    model, raster, output, threads = sys.argv[1:5]
    predict(
        PredictRequest(model=model, input=raster, output=output, threads=int(threads), overwrite=True, compile="off")
    )
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
