"""Measuring a built model on a backend: one cell's rows (accuracy, size, parity, latency), FLOPs, the matmul peak."""
