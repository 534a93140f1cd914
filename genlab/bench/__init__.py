"""Benchmarks: our models against reference implementations, timed in one process on the same machine.

``timing`` holds the interleaved timer and the matmul peak, ``flops`` the FLOP counter, ``diffusion`` the
U-Net comparison behind ``genlab bench diffusion``. Results are ratios measured side by side, so that a
busy or throttled machine slows both candidates alike.
"""
