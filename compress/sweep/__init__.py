"""Sweeps: the search space, the Optuna run, studies, the frontier, the sweep CLI."""
