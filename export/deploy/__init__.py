"""Files that a deployment reads, written at export time: TF Serving's configs and warmup
records (tfserving.py, warmup.py). The serving side reads them through these same modules."""
