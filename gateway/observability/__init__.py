"""Prometheus metrics and per-version window statistics."""
