"""The TF Serving API surface shared by both front ends: core, status codes, tensors."""
