"""Measurement: size, latency, quality on held-out text, the verdict, the metric table."""
