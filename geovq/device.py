"""Device selection and seeding shared by every stage."""

from __future__ import annotations

import ctypes
import os
import random

import numpy as np
import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:1`` taken as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {spec!r} requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order and sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# glibc <malloc.h> mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory(mmap_threshold=256 << 20, trim_threshold=1 << 30, top_pad=64 << 20) -> bool:
    """Have glibc's malloc reuse freed large blocks instead of handing them back to the OS.

    glibc serves a block above its mmap threshold (128 KiB, adapting up to 32 MiB) by a fresh
    mmap and unmaps it on free, and trims the heap top once 2x that is free there, so a loop
    whose every call allocates MB-sized tensors page-faults and zero-fills that memory again
    and again, as the stacked forward-mode pass of the spatial decoder (geovq.riemann) does
    (what that costs: benchmarks/README.md). Blocks up to
    `mmap_threshold` now come from the heap, which is trimmed only above `trim_threshold` free
    and grows by `top_pad` beyond each request: the process keeps its freed memory (its RSS
    stays near its peak) and touches it again without faults. Called by the pipeline jobs that
    compute pull-back metrics (geovq.stages.geodesic). Returns False, changing nothing, where the
    C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(
        [
            mallopt(_M_MMAP_THRESHOLD, mmap_threshold),
            mallopt(_M_TRIM_THRESHOLD, trim_threshold),
            mallopt(_M_TOP_PAD, top_pad),
        ]
    )


def batch_for(device, cpu_batch: int) -> int:
    """A chunk size for ``device``: ``cpu_batch`` on the CPU (what that code path was tuned and
    checked with), 32 times it on a GPU, where small chunks of these small models leave it idle
    (the numbers per item are the same up to float rounding either way)."""
    return cpu_batch * 32 if torch.device(device).type == "cuda" else cpu_batch
