"""The one command: `python -m bench` (or `python bench/run.py`) [--quick] [--out PATH].

Runs every measurement, each side by side in this one run, prints a table of ratios with
the machine and versions, and writes everything to a JSON file (bench/results.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Section, Settings, load  # noqa: E402

SECTIONS = ("epoch", "flops", "choices", "study", "startup", "fixed", "scaling", "parallel")


def settings_for(*, quick: bool, task: str, seed: int) -> Settings:
    if quick:
        return Settings(quick=True, task=task, reps=1, train_limit=2048, val_limit=512,
                        batch_sizes=(128,), study_trials=2, study_epochs=1, seed=seed)
    return Settings(quick=False, task=task, reps=3, train_limit=None, val_limit=None,
                    batch_sizes=(64, 128, 256), study_trials=8, study_epochs=3, seed=seed)


def run(settings: Settings, only: set[str]) -> dict[str, Any]:
    from bench import epoch, fixed, loop, scaling, study
    from bench.common import machine
    from bench.data import Loaded
    from bench.data import load as load_data

    started = time.perf_counter()
    info = machine()
    loaded: Loaded | None = None

    def data() -> Loaded:  # loaded once, by the first section that needs it
        nonlocal loaded
        if loaded is None:
            loaded = load_data(settings)
        return loaded

    steps: dict[str, Callable[[], list[Section]]] = {
        "epoch": lambda: [epoch.epoch_throughput(data(), settings)],
        "flops": lambda: [epoch.against_matmul(data(), settings)],
        "choices": lambda: [loop.loop_choices(data(), settings)],
        "study": lambda: list(study.study_throughput(settings)),
        "startup": lambda: [study.startup(settings)],
        "fixed": lambda: [fixed.fixed_cost(settings)],
        "scaling": lambda: [scaling.size_and_width(data(), settings)],
        "parallel": lambda: [scaling.side_by_side(settings)],
    }
    sections: list[Section] = []
    for name in SECTIONS:
        if name not in only:
            continue
        print(f"  measuring {name} …", file=sys.stderr, flush=True)
        start = time.perf_counter()
        made = steps[name]()
        for section in made:
            section.seconds = time.perf_counter() - start
        sections += made
    info["load_average_at_end"] = round(load(), 2)
    return {
        "machine": info,
        "settings": {k: v for k, v in vars(settings).items()},
        "data": None if loaded is None else {"source": loaded.data.source,
                                             "train": loaded.n_train, "val": loaded.n_val,
                                             "load_s": loaded.seconds},
        "rows": [r.to_dict() for s in sections for r in s.rows],
        "sections": {s.name: {"details": s.details, "seconds": s.seconds} for s in sections},
        "seconds": time.perf_counter() - started,
    }


def _value(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.1%}"
    if unit == "accuracy":
        return f"{value:.4f}"
    if unit in ("samples/s", "MB"):
        return f"{value:,.0f}"
    if unit in ("GFLOP/s", "x"):
        return f"{value:.1f}"
    if unit == "trials/s":
        return f"{value:.3f}"
    return f"{value:.3f}"  # s, ms/step


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    threads = f"{m['torch_threads']} thread{'s' if m['torch_threads'] > 1 else ''}"
    head = [f"opttune bench: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({threads}), "
            f"optuna {m['optuna']}, mlflow {m['mlflow']}, python {m['python']}, "
            f"GPU: {m['cuda'] or 'none'}",
            f"load average {m['load_average_at_start']} at start, {m['load_average_at_end']} "
            f"at end; {result['seconds']:.0f} s"]
    if result["data"]:
        d = result["data"]
        head.append(f"data: {d['source']}, {d['train']:,} train / {d['val']:,} val")
    busy = max(m["load_average_at_start"], m["load_average_at_end"])
    if busy > max(1, m["cores"] - 1) and m["torch_threads"] > 1:
        head.append(f"WARNING: the machine was busy (load {busy:.1f} on {m['cores']} cores): "
                    f"multi-threaded timings can be several times off; run again when it is "
                    f"idle, or with --threads 1")
    cols = ("section", "measurement", "opttune", "reference", "ratio", "target", "holds")
    lines = []
    for r in result["rows"]:
        ratio = f"{r['ratio']:.0%}" if r["section"] == "2 hardware" else f"{r['ratio']:.2f}x"
        holds = "" if r["holds"] is None else ("yes" if r["holds"] else "NO")
        lines.append((r["section"], r["name"], _value(r["opttune"], r["unit"]),
                      _value(r["reference"], r["unit"]), ratio, r["target"], holds))
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c)
              for i, c in enumerate(cols)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in (2, 3, 4) else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    body = [fmt(cols), fmt(tuple("-" * w for w in widths)), *(fmt(line) for line in lines)]
    notes = [f"  {r['name']}: {r['note']}" for r in result["rows"] if r["note"]]
    return "\n".join([*head, "", *body, "", "ratio > 1: opttune is better (faster, less "
                      "memory); hardware row: achieved share of matmul FLOP/s", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure opttune against the hand-written loop and "
        "study, side by side; print the ratios and write them to a JSON file.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repetition: checks the harness, not speed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json",
                        help="where to write the JSON results [default: bench/results.json]")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma list of sections [default: all: {','.join(SECTIONS)}]")
    parser.add_argument("--task", default="fashion-mnist-mlp",
                        help="task whose model and data are measured [default: %(default)s]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every measured loop, both sides (and OMP_NUM_"
                             "THREADS of the study processes) [default: torch's, one per core]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        import os

        import torch

        if args.threads < 1:
            parser.error(f"--threads must be >= 1, but got {args.threads}")
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SECTIONS)}")
    from tasks.registry import get_task
    from tuner.errors import OpttuneError

    try:
        task = get_task(args.task)
    except OpttuneError as exc:
        parser.error(str(exc))
    if task.loss != "cross_entropy":
        parser.error(f"--task must be a classification task (the hand-written baselines score "
                     f"accuracy), but {args.task!r} has the {task.loss} loss")
    result = run(settings_for(quick=args.quick, task=args.task, seed=args.seed), only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
