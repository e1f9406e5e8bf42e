"""Clients for TF Serving's REST and gRPC APIs."""
