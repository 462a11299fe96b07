"""Models: the bundled ones, uploads and their checks, the per-family adapters, ModelBundle."""
