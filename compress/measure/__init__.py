"""Measurement: size, latency, quality on held-out text, the verdict, the peers, the bench table."""
