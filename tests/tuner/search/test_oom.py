"""Out of device memory: the trial fails with the reason recorded and the study goes on.

There is no GPU here, so a user task (a file written by the test, loaded like any user's
task) wraps the digits MLP in a model that raises PyTorch's own CUDA out-of-memory error when
a training batch is larger than it "fits" — exactly what a too-large batch size does on a
real card.
"""

from __future__ import annotations

import gc
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.cli.commands import cli
from tuner.search.runner import search

TASK_FILE = '''
import sys
import weakref

import torch

from tasks.base import Task
from tasks.registry import get_task

DIGITS = get_task("digits-mlp")
FITS = 256  # the largest training batch this pretend card holds


class Greedy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training and x.shape[0] > FITS:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total "
                "capacity; 6.10 GiB already allocated)")
        return self.inner(x)


def build(params):
    model = Greedy(DIGITS.build_model(params))
    sys.modules["oom_probe"].models.append(weakref.ref(model))
    return model


greedy = Task(name="greedy", load_data=DIGITS.load_data, build_model=build, batch_size=64,
              hyperparams=DIGITS.hyperparams)
'''


@pytest.fixture
def task_ref(tmp_path: Path) -> str:
    path = tmp_path / "greedy_task.py"
    path.write_text(textwrap.dedent(TASK_FILE))
    probe = types.ModuleType("oom_probe")
    probe.models = []  # type: ignore[attr-defined]
    sys.modules["oom_probe"] = probe
    return f"{path}:greedy"


# Queued before the study runs: out of memory, fits, out of memory twice more in a row.
OOM_BATCH_SIZES = [1024, 128, 1024, 1024, 1024, 128]


@pytest.mark.slow
def test_an_out_of_memory_trial_fails_and_the_study_goes_on(home: Path, task_ref: str) -> None:
    args: dict[str, Any] = dict(task=task_ref, study="oom", batch_size="128,1024",
                                optimizers=["adam"], n_trials=len(OOM_BATCH_SIZES), epochs=1,
                                defaults_first=False, device="cpu", home=home)
    search(**args, jobs=0)  # creates the study and runs nothing
    queued = optuna.load_study(study_name="oom", storage=f"sqlite:///{home / 'opttune.db'}")
    assert queued.trials == []
    for size in OOM_BATCH_SIZES:
        queued.enqueue_trial({"batch_size": size})
    result = search(**args)
    by_state: dict[str, list[int]] = {}
    for t in result.all_trials:
        by_state.setdefault(t.state, []).append(t.config["batch_size"])
    assert [t.config["batch_size"] for t in result.all_trials] == OOM_BATCH_SIZES
    assert by_state == {"FAIL": [1024] * 4, "COMPLETE": [128] * 2}, by_state
    # an out-of-memory trial counts (it will not fit later), and three in a row stop nothing
    assert result.total_counted == len(OOM_BATCH_SIZES)
    for t in result.all_trials:
        if t.state == "FAIL":
            assert t.reason is not None and t.reason.startswith("out of memory: CUDA out of "
                                                                "memory. Tried to allocate")
    assert result.best is not None and result.best.config["batch_size"] == 128

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for t in result.all_trials:
        run = client.get_run(t.run_id)
        assert run.info.status == ("FAILED" if t.state == "FAIL" else "FINISHED")
        if t.state == "FAIL":
            assert run.data.tags["fail_reason"].startswith("out of memory")

    # Nothing holds on to a failed trial's model (its tensors would stay on the card).
    gc.collect()
    alive = [ref for ref in sys.modules["oom_probe"].models if ref() is not None]
    assert alive == []


@pytest.mark.slow
def test_out_of_memory_in_a_row_does_not_stop_the_study(home: Path, task_ref: str) -> None:
    """Unlike errors (three in a row stop a study), memory depends on the trial's settings."""
    result = CliRunner().invoke(cli, [
        "search", "--task", task_ref, "--study", "big", "--batch-size", "1024",
        "--optimizers", "sgd,adam", "--n-trials", "4", "--epochs", "1", "--device", "cpu",
        "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    study = optuna.load_study(study_name="big", storage=f"sqlite:///{home / 'opttune.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 4
    assert all(t.user_attrs["fail_reason"].startswith("out of memory") for t in study.trials)
    assert "out of memory" in result.output


# -- a population that does not fit ------------------------------------------------------------
WIDE_TASK_FILE = '''
import torch

from tasks.base import Task
from tasks.registry import get_task

DIGITS = get_task("digits-mlp")


def build(params):
    # 17M parameters: with its gradient and Adam's two moments, about 280 MB a member.
    return torch.nn.Sequential(torch.nn.Linear(64, 4096), torch.nn.ReLU(),
                               torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                               torch.nn.Linear(4096, 10))


wide = Task(name="wide", load_data=DIGITS.load_data, build_model=build, batch_size=128)
'''

# Caps the process's memory a little above what it holds once everything is imported, then
# runs the CLI: a real out-of-memory error from torch's CPU allocator, where one member fits
# and four stacked do not.
CAPPED_CLI = '''
import os, resource, sys
import mlflow, optuna, torch
from tuner.cli.commands import cli
torch.ones(256, 256) @ torch.ones(256, 256)  # torch's threads start before the cap
held = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
cap = held + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
cli(sys.argv[2:])
'''


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_a_population_out_of_memory_runs_its_trials_again_in_smaller_ones(
        home: Path, tmp_path: Path) -> None:
    import os
    import subprocess

    from tuner.study.recovery import check
    from tuner.study.studies import POPULATION_OUT_OF_MEMORY

    (tmp_path / "wide_task.py").write_text(textwrap.dedent(WIDE_TASK_FILE))
    script = tmp_path / "capped.py"
    script.write_text(textwrap.dedent(CAPPED_CLI))
    done = subprocess.run(
        [sys.executable, str(script), "700", "search", "--task",
         f"{tmp_path / 'wide_task.py'}:wide", "--study", "wide", "--optimizers", "adam",
         "--n-trials", "4", "--epochs", "1", "--population", "4", "--sampler", "random",
         "--seed", "0", "--no-defaults", "--pruner", "none", "--device", "cpu",
         "--home", str(home)],
        capture_output=True, text=True, timeout=600,
        env=os.environ | {"MALLOC_ARENA_MAX": "2", "COLUMNS": "200"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    assert "--population: 4 trials stacked ran out of memory on cpu (" in output, output
    assert "(DefaultCPUAllocator: can't allocate memory: you tried to allocate" in output

    study = optuna.load_study(study_name="wide", storage=f"sqlite:///{home / 'opttune.db'}")
    trials = study.get_trials(deepcopy=False)
    out_of_memory = [t for t in trials if t.state == TrialState.FAIL]
    assert len(out_of_memory) >= 4
    assert all(t.user_attrs["fail_reason"] == POPULATION_OUT_OF_MEMORY and
               t.user_attrs["population"] in (4, 2) for t in out_of_memory)
    # The budget stays exact: each failed member ran again, once, with its own parameters.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(trials) == len(complete) + len(out_of_memory)
    for failed in out_of_memory:
        retries = [t for t in trials if t.user_attrs.get("retry_of") == failed.number]
        assert len(retries) == 1 and retries[0].params == failed.params
    assert all(t.user_attrs.get("population", 1) < 4 for t in complete)
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for t in out_of_memory:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert run.data.tags["fail_reason"] == POPULATION_OUT_OF_MEMORY
    # What `opttune check` expects of such trials is what they are.
    assert check("wide", home=home).problems == []
