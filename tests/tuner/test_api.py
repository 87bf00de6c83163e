"""The Python API of tuner/__init__.py: `tuner.search` and `tuner.resume` do what the CLI
does, and keep working after the package tuner/search has been imported (Python then binds
`tuner.search` to the package, which is why calling the package searches)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_search_twice_then_resume_from_python(tmp_path: Path) -> None:
    code = f"""
import tuner
import tuner.search.runner as runner  # binds tuner.search to the package, as any import does

home = {str(tmp_path)!r}
first = tuner.search(task="digits-mlp", study="a", n_trials=1, epochs=1, seed=0,
                     optimizers=["adam"], device="cpu", home=home)
second = tuner.search(task="digits-mlp", study="b", n_trials=1, epochs=1, seed=0,
                      optimizers=["adam"], device="cpu", home=home)
more = tuner.resume("a", n_trials=1, home=home)  # one more trial
print(type(tuner.search).__name__, runner.search is not None)
print(len(first.all_trials), len(second.all_trials), len(more.all_trials))
print(first.best.value == second.best.value)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    kind, counts, same = done.stdout.strip().splitlines()[-3:]
    assert kind == "_CallablePackage True"
    assert counts == "1 1 2"  # resume ran one more trial of study a
    assert same == "True"  # the same seed and defaults trial: the same value
