"""The bench harness runs end to end on a tiny configuration and writes its JSON.

A check of the harness, not of speed: `python -m bench --quick` on 2,048 digits, every
section that runs in this process plus the two study processes (opttune's and the
hand-written Optuna one with MLflowCallback).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bench_prints_ratios_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--task", "mnist-mlp", "--threads", "1",
         "--only", "epoch,flops,choices,study,scaling", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"results written to {out}" in proc.stdout
    assert "ratio" in proc.stdout and "torch" in proc.stdout

    result = json.loads(out.read_text())
    assert result["machine"]["cores"] >= 1 and result["machine"]["torch"]
    assert result["settings"]["quick"] is True
    assert result["data"]["train"] == 2048
    sections = {row["section"] for row in result["rows"]}
    assert sections == {"1 epoch", "2 hardware", "loop", "3 study", "4 overhead", "5 scaling"}
    for row in result["rows"]:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert row["opttune"] > 0 and row["reference"] > 0, row
    study = result["sections"]["study"]["details"]["runs"]
    for side in ("opttune", "handwritten"):
        run = study[side][0]
        assert sum(run["states"].values()) == 2  # --quick: two trials on each side
        assert 0.1 < run["best_value"] <= 1.0 and run["maxrss_mb"] > 0
    # Bookkeeping is measured from inside the opttune process: trials, fits, store calls.
    clock = study["opttune"][0]["clock"]
    assert clock["trial"] >= clock["fit"] > 0 and clock["optuna_in_trial"] > 0


def test_unknown_section_is_refused_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "epoch,warp",
                           "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown sections warp" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_quick_fixed_cost_section_measures_three_searches(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "fixed", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    details = result["sections"]["fixed"]["details"]
    assert details["import_line_s"] > 0 and len(details["cases"]) == 3
    for case in details["cases"].values():
        assert case["wall_s"] > case["trials_s"] > 0 and case["fixed_s"] > 0
    rows = [r for r in result["rows"] if r["section"] == "4 fixed cost"]
    assert len(rows) == 3 and all(r["holds"] in (True, False) for r in rows)
