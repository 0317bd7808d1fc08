"""ursabench - ursa's bench suite as a package (see bench/bench.py)."""
