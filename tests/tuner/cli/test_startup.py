"""What each command loads before it answers: reading a study back (studies, trials, best,
compare, export) must not pay for torch or MLflow (each well over a second to import here),
and `import tuner` must not load Optuna. These are what the imports kept inside functions are
for (ruff's PLC0415 allow-list in pyproject.toml); a module that moves a heavy import to its
top on one of these paths fails here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "store-0.1.0"
STUDY = "release"  # the fixture's one study
TRAINING = ("torch", "mlflow")


def _loaded_by(args: list[str], *, watched: tuple[str, ...]) -> tuple[str, list[str]]:
    code = ("import sys\n"
            "from tuner.cli.commands import cli\n"
            f"cli({args!r}, standalone_mode=False)\n"
            f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & "
            f"set({watched!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    *output, loaded = done.stdout.strip().splitlines()
    assert loaded.startswith("LOADED ")
    return "\n".join(output), ast.literal_eval(loaded.removeprefix("LOADED "))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("startup") / "home"
    shutil.copytree(FIXTURE, copy, ignore=shutil.ignore_patterns("README.md"))
    return copy


@pytest.mark.parametrize("command", [["studies"], ["trials", STUDY], ["best", STUDY],
                                     ["compare", STUDY], ["export", STUDY, "-o", "x.csv"]])
def test_reading_a_study_loads_neither_torch_nor_mlflow(home: Path, tmp_path: Path,
                                                        command: list[str]) -> None:
    if command[0] == "export":
        command = [*command[:-1], str(tmp_path / "x.csv")]
    output, loaded = _loaded_by([*command, "--home", str(home)], watched=TRAINING)
    if command[0] == "export":
        assert (tmp_path / "x.csv").read_text().startswith("number,")
    else:
        assert STUDY in output or "digits-mlp" in output, output  # it did read the study
    assert loaded == []


def test_import_tuner_loads_no_optuna() -> None:
    code = ("import sys, tuner\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'optuna', 'torch', 'mlflow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_search_loads_nothing_heavy_before_its_mlflow_process_starts() -> None:
    """The runner starts the MLflow process after it has found the task and built the space;
    torch (over a second), MLflow and SQLAlchemy must load after that, so that the child's
    import of MLflow overlaps them (measured: a 2-trial digits search took 0.3 s longer when
    the built-in tasks imported torch at their top)."""
    code = ("import sys\n"
            "import tuner.search.runner\n"
            "from tasks.registry import get_task, list_tasks\n"
            "tasks = [get_task(t.name) for t in list_tasks()]\n"
            "print(len(tasks), sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'mlflow', 'sqlalchemy', 'sklearn', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    count, loaded = done.stdout.strip().split(" ", 1)
    assert int(count) >= 6  # the built-in tasks, each found by its name
    assert loaded == "[]"
