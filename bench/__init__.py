"""CPU benchmarks of the engine (``make bench`` = ``python -m bench``): figures measured side by side in one run."""
