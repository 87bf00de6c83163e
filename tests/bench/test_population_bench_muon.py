"""bench.population's Muon rows (`--families adam,muon`): each family timed against its own
one at a time, the names of its sides, and the families it refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_sides_of_another_family_carry_its_name() -> None:
    from bench.population import _side

    updates, families = ["auto", "batched"], ["adam", "muon"]
    assert _side(8, "auto", updates, "adam", families) == "K=8"
    assert _side(8, "batched", updates, "adam", families) == "K=8 batched"
    assert _side(8, "auto", updates, "muon", families) == "K=8 muon"
    assert _side(8, "batched", updates, "muon", families) == "K=8 batched muon"
    assert _side(8, "auto", ["auto"]) == "K=8"  # the Adam-only bench names what it named


def test_muon_trials_spread_their_lr_over_the_familys_range() -> None:
    from bench.population import _configs

    adam = _configs(3, 1)
    assert [c.hyper for c in adam] == [{"lr": 1e-4}, {"lr": 1e-4 * 10}, {"lr": 1e-4 * 100}]
    muon = _configs(3, 1, "muon")
    assert [c.optimizer for c in muon] == ["muon"] * 3
    assert [c.hyper["lr"] for c in muon] == pytest.approx([2e-3, 2e-2, 2e-1])
    assert all(c.hyper["momentum"] == 0.95 and c.hyper["adam_lr"] == 3e-4 for c in muon)


def test_a_family_without_a_stacked_rule_is_refused_before_anything_runs() -> None:
    from bench.population import _unstackable

    assert _unstackable("adam") is None and _unstackable("muon") is None
    assert _unstackable("adafactor") == "adafactor (Adafactor) has no stacked update rule"
    assert _unstackable("nope") is not None and "unknown family" in str(_unstackable("nope"))
    proc = subprocess.run([sys.executable, "-m", "bench.population", "--families",
                           "adam,adafactor"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "--families: adafactor cannot be timed as a population" in proc.stderr


@pytest.mark.slow
def test_the_muon_rows_are_measured_against_muon_alone(tmp_path: Path) -> None:
    """mnist-mlp (784-256-128-10) has a hidden matrix, so its muon trials run Muon."""
    out = tmp_path / "population.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.population", "--quick", "--tasks", "mnist-mlp",
         "--processes", "1", "--families", "adam,muon", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {row["side"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"alone", "alone muon", "K=1", "K=2", "K=1 muon", "K=2 muon", "floor"}
    for side, row in rows.items():
        assert row["family"] == ("muon" if side.endswith("muon") else "adam"), side
        assert row["seconds_per_trial_epoch"] > 0
        alone = rows["alone muon" if side.endswith("muon") else "alone"]
        assert row["versus_alone"] == pytest.approx(
            alone["seconds_per_trial_epoch"] / row["seconds_per_trial_epoch"])
    assert "population K=2 muon" in proc.stdout and "one at a time (muon)" in proc.stdout
