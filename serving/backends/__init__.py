"""What the local server runs: servables, the model registry, batching."""
