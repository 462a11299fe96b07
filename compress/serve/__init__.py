"""Serving many sessions: the job queue, cancel, memory bounds, the results store, the caches."""
