"""Choosing the device a trial trains on (CUDA, then MPS, then CPU), and knowing when it is
out of memory.

Importing this module does not import torch: the command line checks ``--device`` with
:func:`check_device_spec` before anything loads it, and the search's modules import this one
at their top without training yet.
"""

from __future__ import annotations

import re

from tuner.errors import OpttuneError

_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_spec(spec: str) -> str:
    """Validate a --device value without importing torch."""
    spec = spec.strip().lower()
    if not _PATTERN.match(spec):
        raise OpttuneError(f"--device must be auto, cpu, cuda, cuda:N or mps, but got {spec!r}")
    return spec


def resolve_device(spec: str = "auto") -> str:
    """The concrete device for `spec`: auto picks CUDA, then MPS, then CPU."""
    import torch  # noqa: PLC0415  (heavy: see the module docstring)

    spec = check_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OpttuneError(f"--device {spec}: CUDA is not available on this machine; "
                               f"use --device auto or cpu")
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise OpttuneError(f"--device {spec}: this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
        return f"cuda:{index}"
    if spec == "mps" and not torch.backends.mps.is_available():
        raise OpttuneError("--device mps: MPS is not available on this machine; use auto or cpu")
    return spec


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the host) ran out of memory."""
    import torch  # noqa: PLC0415  (heavy: see the module docstring)

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    # torch's CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate
    # memory: you tried to allocate … bytes").
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message)


def out_of_memory_reason(exc: BaseException) -> str:
    """'out of memory: ' and the first line of `exc`, without the C++ assertion that torch's
    CPU allocator puts before its own words."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return "out of memory: " + re.sub(r"^\[enforce fail at [^\]]*\] err == 0\. ", "", line)[:200]
