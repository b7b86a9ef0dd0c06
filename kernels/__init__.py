"""Numba kernels for drift: histogram binning, streaming moments, PSI / KS / JS from counts."""
