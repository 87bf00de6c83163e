"""Several trials at once on this machine: one process per running trial, each on its device.

`--jobs N` starts N worker processes (processes, not threads: training holds the GIL, and a
trial that crashes or is killed takes only its own process down). Each joins the study
through its store as `opttune worker` does, claims trials under the study's lock
(tuner.study.claims) and trains on the device of its slot; this process only starts them,
relays what they report to the display, and stops them cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuner.errors import OpttuneError
from tuner.jsontypes import JsonObject
from tuner.search.events import Observer, TrialOutcome
from tuner.search.session import SearchResult, finish_result, study_start
from tuner.signals import Interrupted, sigterm_as_interrupt
from tuner.study.studies import counted
from tuner.training.devices import check_device_spec, resolve_device

if TYPE_CHECKING:
    import optuna

    from tuner.study.locations import Stores
    from tuner.study.meta import StudyMeta


# -- which device each process trains on -------------------------------------------------
def parse_devices(devices: str | Sequence[str] | None) -> list[str] | None:
    """`cuda:0,cuda:1` (or a list) → checked, normalised device names; None stays None."""
    if devices is None:
        return None
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    names = [check_device_spec(item) for item in items if item.strip()]
    if not names:
        raise OpttuneError(f"--devices must name at least one device, e.g. cuda:0,cuda:1, but "
                           f"got {devices!r}")
    if "auto" in names:
        raise OpttuneError("--devices lists concrete devices (cpu, cuda:N, mps), not auto")
    names = ["cuda:0" if name == "cuda" else name for name in names]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OpttuneError(f"--devices names {', '.join(repeated)} more than once; use "
                           f"--trials-per-device K to run several trials on one device")
    return names


def assign_devices(*, jobs: int | None, devices: Sequence[str],
                   trials_per_device: int = 1) -> list[str]:
    """The device of each parallel slot: round robin over `devices`, at most
    `trials_per_device` slots on any one device; `jobs` None fills every slot."""
    if trials_per_device < 1:
        raise OpttuneError(f"--trials-per-device must be >= 1, but got {trials_per_device}")
    if not devices:
        raise OpttuneError("no device to run trials on")
    capacity = len(devices) * trials_per_device
    if jobs is None:
        jobs = capacity
    if jobs < 0:
        raise OpttuneError(f"--jobs must be >= 0, but got {jobs}")
    if jobs > capacity:
        need = -(-jobs // len(devices))
        raise OpttuneError(
            f"--jobs {jobs} needs {jobs} device slots, but {len(devices)} device(s) "
            f"({', '.join(devices)}) with --trials-per-device {trials_per_device} give "
            f"{capacity}; pass --trials-per-device {need} to share each device, or list more "
            f"--devices, or lower --jobs")
    return [devices[i % len(devices)] for i in range(jobs)]


def plan_slots(*, jobs: int | None, device: str | None,
               devices: str | Sequence[str] | None = None,
               trials_per_device: int = 1) -> list[str] | None:
    """The device of every process `--jobs` starts on this machine, checked against it.

    None means the classic way: trials one after another in this process, on `device`. With
    `--jobs` > 1 and no `--devices`: every visible GPU when trials run on CUDA, else all jobs
    share the CPU (or MPS) device.
    """
    listed = parse_devices(devices)
    if listed is not None and device not in (None, "auto"):
        raise OpttuneError(f"give --device or --devices, not both (got --device {device} and "
                           f"--devices {','.join(listed)})")
    if jobs is not None and jobs < 0:
        raise OpttuneError(f"--jobs must be >= 0, but got {jobs}")
    if trials_per_device < 1:
        raise OpttuneError(f"--trials-per-device must be >= 1, but got {trials_per_device}")
    if listed is None and (jobs is None or jobs == 1):
        return None
    if jobs == 0:
        return []
    if listed is not None:
        for name in listed:
            resolve_device(name)  # exists on this machine?
        if listed == ["cpu"]:
            return ["cpu"] * int(jobs or 1)
        return assign_devices(jobs=jobs, devices=listed, trials_per_device=trials_per_device)
    spec = (device or "auto").strip().lower()
    resolved = resolve_device(spec)
    if resolved == "cpu":
        return ["cpu"] * int(jobs or 1)  # the CPU is shared: threads are split instead
    if resolved.startswith("cuda") and spec in ("auto", "cuda"):
        # Loaded by resolve_device already; not with this module, which the runner imports
        # before it checks its flags (see tuner.search.runner).
        import torch  # noqa: PLC0415  (heavy: see above)

        listed = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        listed = [resolved]
    return assign_devices(jobs=jobs, devices=listed, trials_per_device=trials_per_device)


def cpu_threads(jobs: int, cores: int | None = None) -> int:
    """Torch threads per process, so that `jobs` processes share the cores without fighting."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


def describe_slots(slots: Sequence[str], threads: int) -> str:
    """`cuda:0 ×2, cuda:1 ×2` or `cpu ×2 (1 thread each)`, for the display."""
    counts: dict[str, int] = {}
    for name in slots:
        counts[name] = counts.get(name, 0) + 1
    text = ", ".join(f"{name} ×{n}" for name, n in counts.items())
    if set(counts) == {"cpu"}:
        text += f" ({threads} thread{'s' if threads > 1 else ''} each)"
    return text


# -- the processes ----------------------------------------------------------------------------
_STOP_GRACE_S = 60.0  # after Ctrl-C, how long a process may take to mark its trial and exit


@dataclass
class _Job:
    index: int
    device: str
    proc: subprocess.Popen[bytes]
    buffer: bytes = b""
    open: bool = True
    error: str | None = None


def run_jobs(*, name: str, stores: Stores, slots: Sequence[str], target: int,
             timeout: float | None, study: optuna.Study, meta: StudyMeta, observer: Observer,
             announced: Iterable[str] = (), population: int = 1) -> SearchResult:
    """Run study `name` in one process per slot until it has `target` trials; no slots:
    nothing runs (the study is created or its budget updated, for workers to run)."""
    threads = cpu_threads(len(slots))
    result = SearchResult(study=name, metric=meta.metric, direction=meta.direction,
                          device=describe_slots(slots, threads), data_source=meta.data_source,
                          stores=stores, target=target)
    errors: list[str] = []
    if slots:
        observer.study_start(study_start(
            name=name, device=result.device, target=target, meta=meta, stores=stores,
            done=counted(study.get_trials(deepcopy=False))))
        spec: JsonObject = {
            "name": name, "home": str(stores.home), "storage": stores.storage_url,
            "tracking_uri": stores.tracking_uri, "timeout": timeout, "threads": threads,
            "population": population}  # a resume's override reaches every process
        jobs = [_start(i, device, spec) for i, device in enumerate(slots)]
        errors = _supervise(name, jobs, observer, result.trials, set(announced))
    finish_result(result, study)
    if errors:
        raise OpttuneError("; ".join(dict.fromkeys(errors)))
    return result


def _start(index: int, device: str, spec: JsonObject) -> _Job:
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    # Its own session: a terminal's Ctrl-C reaches only us, and we stop each job exactly once.
    proc = subprocess.Popen([sys.executable, "-c", "from tuner.search.worker import child_main; "
                             "child_main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, start_new_session=True)
    assert proc.stdin is not None
    # The spec goes through a pipe, not argv: a store URL may hold a password.
    proc.stdin.write(json.dumps({**spec, "device": device, "index": index}).encode() + b"\n")
    proc.stdin.close()
    return _Job(index=index, device=device, proc=proc)


def _supervise(name: str, jobs: list[_Job], observer: Observer, outcomes: list[TrialOutcome],
               seen: set[str]) -> list[str]:
    with sigterm_as_interrupt() as received:
        try:
            _pump(jobs, observer, outcomes, seen, deadline=None)
        except KeyboardInterrupt:
            signum = received[-1] if received else signal.SIGINT
            _stop(jobs, signum, observer, outcomes, seen)
            raise Interrupted(signum) from None
    errors = []
    for job in jobs:
        code = job.proc.wait()
        if job.error:
            errors.append(job.error)
        elif code != 0:
            errors.append(f"the process of job {job.index + 1} ({job.device}) ended with exit "
                          f"code {code}; `opttune resume {name}` continues the study")
    return errors


def _stop(jobs: list[_Job], signum: int, observer: Observer, outcomes: list[TrialOutcome],
          seen: set[str]) -> None:
    """Pass the signal on once; each job marks its trial interrupted and re-queues it."""
    for job in jobs:
        if job.proc.poll() is None:
            job.proc.send_signal(signum)
    try:
        _pump(jobs, observer, outcomes, seen, deadline=time.monotonic() + _STOP_GRACE_S)
    except KeyboardInterrupt:  # asked twice: stop now; their trials are recovered on resume
        pass
    for job in jobs:
        if job.proc.poll() is None:
            job.proc.kill()
        job.proc.wait()


def _pump(jobs: list[_Job], observer: Observer, outcomes: list[TrialOutcome], seen: set[str],
          *, deadline: float | None) -> None:
    """Relay every job's events to `observer` until all have closed their pipe."""
    selector = selectors.DefaultSelector()
    for job in jobs:
        if job.open and job.proc.stdout is not None:
            selector.register(job.proc.stdout, selectors.EVENT_READ, job)
    try:
        while selector.get_map():
            if deadline is not None and time.monotonic() > deadline:
                return
            for key, _ in selector.select(timeout=0.5):
                job = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    job.open = False
                    selector.unregister(key.fileobj)
                    continue
                job.buffer += chunk
                while b"\n" in job.buffer:
                    line, _, job.buffer = job.buffer.partition(b"\n")
                    _relay(job, line, observer, outcomes, seen)
    finally:
        selector.close()


def _relay(job: _Job, line: bytes, observer: Observer, outcomes: list[TrialOutcome],
           seen: set[str]) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        return
    kind = event.pop("event", None)
    if kind == "notice" and event["text"] not in seen:
        seen.add(event["text"])  # the same note from every job is shown once
        observer.notice(event["text"])
    elif kind == "trial_start":
        observer.trial_start(event["number"], event["config"], event["index"], event["total"])
    elif kind == "epoch_end":
        observer.epoch_end(event["number"], event["epoch"], event["epochs"], event["value"],
                           event["train_loss"])
    elif kind == "trial_end":
        outcome = TrialOutcome(**event["outcome"])
        outcomes.append(outcome)
        best = TrialOutcome(**event["best"]) if event.get("best") else None
        observer.trial_end(outcome, best)
    elif kind == "error":
        job.error = event["message"]
