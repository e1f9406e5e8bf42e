"""`make export` as a pipeline: config, per-variant stages, the worker pool, the bundle run."""
