"""Benchmarks and evaluation tasks for onnxslim (not part of the installed core)."""
