"""Batch scoring on Apache Beam RunInference: the pipeline, model handlers, the command, its bench."""
