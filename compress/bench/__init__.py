"""Benchmarks run by command, never asserted in tests: the technique table (techniques), the sweeps (sweeps), the peers
(peers) and the shipped healing curves (healcurve) of BENCHMARKS.md and the Learn page."""
