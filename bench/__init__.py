"""jobstatus benchmarks: `make bench` (python -m bench).

Every figure is a ratio against a baseline measured in the same run; the absolute
numbers are context. Load comes from separate worker processes, whose CPU is
reported beside each figure so that a saturated load generator is visible.
"""

# What a baseline process (bench.baseline, bench.asgi_baseline) prints once it serves.
READY = "bench-baseline: serving on"
