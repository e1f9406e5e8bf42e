"""Training a head on a class-per-folder tree: data folders, the fit, cached runs, settings, the run report."""
