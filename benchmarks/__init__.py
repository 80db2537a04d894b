"""edgeopt's benchmark suite (BENCHMARK.md): `python -m benchmarks` (or `make bench`).

metrics (the ruler), answer (plant truth as registers), replay (the daemon's
Poller and optimizer in virtual time), baselines (fixed_naive, the fixed
frontier, the oracle), frontier / realsocket / overhead / serial / storage
(the sections), report and plots (BENCHMARKS.md and its PNGs).
"""
