"""Benchmarks of a bundle on this machine: measuring, targets, the bench document and its report."""
