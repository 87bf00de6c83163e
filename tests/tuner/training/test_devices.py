"""tuner.training.devices: device names, and telling an out-of-memory error from the rest."""

from __future__ import annotations

import pytest
import torch

from tuner.errors import OpttuneError
from tuner.training.devices import check_device_spec, is_out_of_memory, out_of_memory_reason


def test_device_spec() -> None:
    assert check_device_spec(" CUDA:1 ") == "cuda:1"
    with pytest.raises(OpttuneError, match=r"--device must be auto, cpu, cuda, cuda:N or mps, "
                                           r"but got 'gpu'"):
        check_device_spec("gpu")


def test_out_of_memory_from_the_cpu_allocator_and_the_card() -> None:
    # What torch's CPU allocator raises when an allocation is refused (a real one).
    with pytest.raises(RuntimeError) as refused:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(refused.value)
    assert out_of_memory_reason(refused.value).startswith(
        "out of memory: DefaultCPUAllocator: can't allocate memory: you tried to allocate")
    card = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_out_of_memory(card) and is_out_of_memory(MemoryError())
    assert out_of_memory_reason(card) == ("out of memory: CUDA out of memory. Tried to "
                                          "allocate 2.00 GiB")
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))
