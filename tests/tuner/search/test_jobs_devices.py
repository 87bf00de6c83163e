"""Which device each `--jobs` process trains on: pure assignment on fake device lists."""

from __future__ import annotations

import itertools

import pytest

from tuner.errors import OpttuneError
from tuner.search.jobs import (
    assign_devices,
    cpu_threads,
    describe_slots,
    parse_devices,
    plan_slots,
)

GPUS = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_round_robin_spreads_jobs_over_devices_before_sharing_one() -> None:
    assert assign_devices(jobs=3, devices=GPUS[:2], trials_per_device=2) == \
        ["cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices(jobs=2, devices=GPUS, trials_per_device=1) == ["cuda:0", "cuda:1"]


def test_no_jobs_given_fills_every_slot_of_every_device() -> None:
    slots = assign_devices(jobs=None, devices=GPUS[:2], trials_per_device=3)
    assert sorted(slots) == ["cuda:0"] * 3 + ["cuda:1"] * 3


def test_never_more_trials_on_a_device_than_asked() -> None:
    for n_devices, per_device in itertools.product(range(1, 5), range(1, 4)):
        devices = GPUS[:n_devices]
        for jobs in range(0, n_devices * per_device + 1):
            slots = assign_devices(jobs=jobs, devices=devices, trials_per_device=per_device)
            assert len(slots) == jobs
            assert max((slots.count(d) for d in devices), default=0) <= per_device
            # as even as possible: no device holds two more than another
            counts = [slots.count(d) for d in devices]
            assert max(counts) - min(counts) <= 1


def test_more_jobs_than_slots_is_refused_with_the_fix() -> None:
    with pytest.raises(OpttuneError, match=r"--jobs 5 .* give 4; pass --trials-per-device 3"):
        assign_devices(jobs=5, devices=GPUS[:2], trials_per_device=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"jobs": -1, "devices": GPUS, "trials_per_device": 1}, "--jobs must be >= 0"),
    ({"jobs": 2, "devices": GPUS, "trials_per_device": 0}, "--trials-per-device must be >= 1"),
    ({"jobs": 2, "devices": [], "trials_per_device": 1}, "no device"),
])
def test_bad_numbers_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(OpttuneError, match=message):
        assign_devices(**kwargs)


def test_device_lists_are_parsed_and_checked() -> None:
    assert parse_devices(" cuda:0, cuda:1 ") == ["cuda:0", "cuda:1"]
    assert parse_devices(["cuda", "cuda:2"]) == ["cuda:0", "cuda:2"]
    assert parse_devices(None) is None
    with pytest.raises(OpttuneError, match="cuda:1 more than once; use --trials-per-device"):
        parse_devices("cuda:1,cuda:0,cuda:1")
    with pytest.raises(OpttuneError, match="not auto"):
        parse_devices("auto")
    with pytest.raises(OpttuneError, match="--device must be"):
        parse_devices("gpu0")
    with pytest.raises(OpttuneError, match="at least one device"):
        parse_devices(",")


def test_torch_threads_split_the_cores_between_processes() -> None:
    assert cpu_threads(2, cores=2) == 1
    assert cpu_threads(3, cores=2) == 1
    assert cpu_threads(1, cores=8) == 8
    assert cpu_threads(4, cores=16) == 4
    assert cpu_threads(0, cores=4) == 4


def test_slots_are_described_for_people() -> None:
    assert describe_slots(["cuda:0", "cuda:1", "cuda:0"], 4) == "cuda:0 ×2, cuda:1 ×1"
    assert describe_slots(["cpu", "cpu"], 1) == "cpu ×2 (1 thread each)"


# -- on this machine (the CPU path; CUDA machines differ) ------------------------------------
def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="plans the CPU path; this machine has CUDA")
def test_plan_on_a_cpu_machine() -> None:
    assert plan_slots(jobs=None, device="auto") is None  # one trial at a time, in-process
    assert plan_slots(jobs=1, device="auto") is None
    assert plan_slots(jobs=0, device="auto") == []  # create the study only
    assert plan_slots(jobs=3, device="auto") == ["cpu"] * 3  # the CPU is shared by all
    assert plan_slots(jobs=2, device=None, devices="cpu") == ["cpu"] * 2
    assert plan_slots(jobs=None, device="auto", devices="cpu") == ["cpu"]
    with pytest.raises(OpttuneError, match="CUDA is not available"):
        plan_slots(jobs=2, device=None, devices="cuda:0,cuda:1")
    with pytest.raises(OpttuneError, match="give --device or --devices, not both"):
        plan_slots(jobs=2, device="cpu", devices="cuda:0")
