"""Choosing the device a trial trains on: CUDA, then MPS, then CPU."""

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
    import torch

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
