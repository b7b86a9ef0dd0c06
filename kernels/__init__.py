"""Numba kernels for drift: histogram binning, streaming moments, PSI / KS / JS from counts.

`warm_up()` compiles them all at start-up; `profile` builds the reference they compare against.
"""

from kernels.warmup import warm_up

__all__ = ["warm_up"]
