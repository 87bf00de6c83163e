"""`--population K`: K trials claimed, sampled and trained at once as one stacked model.

Every member is a full trial (its own Optuna trial, MLflow child run, epochs, pruning and
outcome), the budget stays exact, the values agree with one-at-a-time training, an
interruption fails and re-queues every member, and a model that cannot be stacked falls back
to one trial at a time with a notice.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from helpers.gate_task import GATE_ENV, TASK_REF, gate_env, open_gate, wait_reached
from helpers.search_process import trial_rows
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from tuner.cli.commands import cli
from tuner.search.sampling import make_sampler
from tuner.study.recovery import check

FAST = ("--task", "digits-mlp", "--epochs", "2", "--device", "cpu")

# The gate task (helpers.gate_task) for a population. Its gate blocks at the first training
# step after a validation; but a population's stack check runs the members' own model through
# a training step and evaluations before training starts, so the plain gate would block at the
# first step of epoch 1, before any epoch is reported. This one counts an evaluation only once
# its model has taken two training steps (the check takes one): it holds a population after
# its first reported epoch, as the gate task holds a trial alone. Blocking works under vmap:
# the gate's wait is plain Python in the stacked model's forward.
POP_GATE_TASK = f'''
import importlib.util

_spec = importlib.util.spec_from_file_location("opttune_test_gate", {TASK_REF.rsplit(":", 1)[0]!r})
gate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate)


class PopGated(gate._Gated):
    def __init__(self, inner):
        super().__init__(inner)
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
        elif self.steps < 2:  # the stack check's evaluation, not an epoch's validation
            return self.inner(x)
        return super().forward(x)


task = gate.Task(name="popgate", load_data=gate.load_digits_data,
                 build_model=lambda params: PopGated(gate.mlp([64, 16, 10])), batch_size=64)
'''


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Trials trained in this process use one thread, as each job does: two threads on a
    2-core machine that other processes share mostly wait for each other (3x slower here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pop_gate_task(folder: Path) -> str:
    """The population gate task, written into `folder`; its reference for --task."""
    (folder / "pop_gate_task.py").write_text(POP_GATE_TASK)
    return f"{folder / 'pop_gate_task.py'}:task"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def load(home: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 'opttune.db'}")


def finished(home: Path, name: str) -> list[FrozenTrial]:
    return [t for t in load(home, name).get_trials(deepcopy=False) if t.state.is_finished()]


def client(home: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def run_of(home: Path, trial: FrozenTrial) -> Any:
    return client(home).get_run(trial.user_attrs["mlflow_run_id"])


def epochs_logged(home: Path, trial: FrozenTrial, metric: str = "val_acc") -> int:
    return len(client(home).get_metric_history(trial.user_attrs["mlflow_run_id"], metric))


def overlap(home: Path, a: FrozenTrial, b: FrozenTrial) -> bool:
    """Whether the two trials' MLflow runs were open at the same time (trained together)."""
    ra, rb = run_of(home, a).info, run_of(home, b).info
    return bool(ra.start_time < rb.end_time and rb.start_time < ra.end_time)


# -- the library and sampler -----------------------------------------------------------------

def test_population_below_one_is_refused_before_any_work(home: Path) -> None:
    result = CliRunner().invoke(cli, ["search", *FAST, "--population", "0", "--home",
                                      str(home)])
    assert result.exit_code == 1, result.output
    assert "--population must be >= 1, but got 0" in result.output
    assert not (home / "opttune.db").exists()


def test_tpe_lies_about_running_trials_only_with_a_population() -> None:
    def liar(population: int) -> bool:
        sampler: Any = make_sampler("tpe", families=["sgd", "adam"], seed=0,
                                    population=population)
        return bool(sampler._base._constant_liar)

    assert liar(1) is False and liar(4) is True


# -- K=4 against K=1 -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Iterator[Path]:
    """One home holding the same study (random sampler, fixed seed, 6 trials, Adam and AdamW
    only, so members always share a step) run one at a time ("solo") and 4 at a time
    ("pop")."""
    folder = tmp_path_factory.mktemp("population") / "home"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    common = (*FAST, "--optimizers", "adam,adamw", "--sampler", "random", "--seed", "5",
              "--no-defaults", "--pruner", "none", "--n-trials", "6", "--home", str(folder))
    for name, k in (("solo", "1"), ("pop", "4")):
        result = invoke("search", "--study", name, "--population", k, *common)
        assert result.exit_code == 0, result.output
        assert "cannot train as one stacked model" not in result.output
        assert "through vmap" not in result.output  # a plain MLP: batched matrix products
    yield folder


@pytest.mark.slow
def test_values_do_not_depend_on_the_population(pair: Path) -> None:
    solo = {t.number: t for t in finished(pair, "solo")}
    pop = {t.number: t for t in finished(pair, "pop")}
    assert sorted(solo) == sorted(pop) == list(range(6))
    for number, t in solo.items():
        assert pop[number].params == t.params  # the same draws, in the same order
        assert t.value is not None and pop[number].value is not None
        assert abs(pop[number].value - t.value) <= 0.01, (number, t.value, pop[number].value)
    assert load(pair, "pop").user_attrs["settings"]["population"] == 4


@pytest.mark.slow
def test_the_budget_is_exact_when_the_population_does_not_divide_it(pair: Path) -> None:
    trials = load(pair, "pop").get_trials(deepcopy=False)
    assert len(trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_every_member_has_its_own_mlflow_run_with_its_epochs(pair: Path) -> None:
    trials = finished(pair, "pop")
    runs = [run_of(pair, t) for t in trials]
    assert len({r.info.run_id for r in runs}) == 6
    for t, run in zip(trials, runs, strict=True):
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial_state"] == "COMPLETE"
        assert "mlflow.parentRunId" in run.data.tags
        assert epochs_logged(pair, t) == 2 and epochs_logged(pair, t, "train_loss") == 2
        assert t.user_attrs["epochs_run"] == 2
    # Each trial records the size of the stacked model it trained in (Adam and AdamW share a
    # step, whatever their schedules); the first four trained together, then the last two.
    sizes = [t.user_attrs["population"] for t in trials]
    assert sizes == [4, 4, 4, 4, 2, 2], sizes
    first, second = trials[:4], trials[4:]
    assert all(overlap(pair, a, b) for a in first for b in first if a is not b)
    assert overlap(pair, second[0], second[1])


# -- members leave on their own ---------------------------------------------------------------

@pytest.mark.slow
def test_members_are_pruned_and_diverge_on_their_own(home: Path) -> None:
    # sgd and momentum share one stacked step; SGD at these rates blows up, momentum's trials
    # train sanely and the median pruner stops the poor ones once three have completed.
    result = invoke("search", *FAST, "--study", "p", "--optimizers", "sgd,momentum",
                    "--lr", "sgd=1000:100000", "--lr", "momentum=1e-4:0.5",
                    "--sampler", "random", "--seed", "0", "--no-defaults",
                    "--n-trials", "12", "--population", "4", "--home", str(home))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    trials = finished(home, "p")
    assert len(trials) == 12
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED
              and t.user_attrs["prune_reason"].startswith("pruned by the median pruner")]
    diverged = [t for t in trials if t.state == TrialState.PRUNED
                and t.user_attrs["prune_reason"] == "diverged"]
    assert pruned and diverged and complete
    for t in pruned:
        assert t.user_attrs["epochs_run"] == 1 and epochs_logged(home, t) == 1
        run = run_of(home, t)
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "PRUNED"
        assert any(overlap(home, t, c) for c in complete)  # the others trained on
    for t in diverged:
        assert isinstance(t.user_attrs["diverged_step"], int)
        assert run_of(home, t).data.tags["prune_reason"] == "diverged"
        assert any(overlap(home, t, c) for c in complete)


# -- an interrupted population -------------------------------------------------------------------

EPOCHS = 2  # the population is held at the gate after its first: still training


@pytest.mark.slow
def test_sigterm_fails_and_requeues_every_member_then_resume_completes(
        home: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    task = pop_gate_task(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "search", "--task", task, "--study", "t",
         "--epochs", str(EPOCHS), "--device", "cpu", "--optimizers", "adam,adamw",
         "--no-defaults", "--pruner", "none", "--seed", "2", "--n-trials", "3",
         "--population", "3", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=gate_env(gate, OMP_NUM_THREADS="1"))
    try:
        wait_reached(gate, 1, proc=proc)  # the population is held: one epoch reported
        deadline = time.monotonic() + 60
        while True:  # the store may be locked by a write for a moment: read it again
            rows = [(state, epochs) for _, state, epochs in trial_rows(home / "opttune.db")]
            if rows:
                break
            assert time.monotonic() < deadline, "the store could not be read"
            time.sleep(0.01)
        assert len(rows) == 3 and all(s == "RUNNING" and 0 < n < EPOCHS for s, n in rows), rows
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output
    assert "Traceback" not in output

    study = load(home, "t")
    members = [t for t in study.trials if t.number < 3]
    for t in members:
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
        assert t.user_attrs["population"] == 3  # they trained as one stacked model
        assert run_of(home, t).info.status == "KILLED"
        queued = [q for q in study.trials if q.user_attrs.get("retry_of") == t.number]
        assert len(queued) == 1 and queued[0].state == TrialState.WAITING
        assert queued[0].system_attrs["fixed_params"] == t.params
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    again = invoke("resume", "t", "--home", str(home))
    assert again.exit_code == 0, again.output
    study = load(home, "t")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert sorted(t.user_attrs["retry_of"] for t in complete) == [0, 1, 2]
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    statuses = {r.info.status for r in client(home).search_runs(
        [client(home).get_experiment_by_name("t").experiment_id])}
    assert "RUNNING" not in statuses
    assert check("t", home=home).problems == []


# -- a model that cannot be stacked ---------------------------------------------------------

BATCHNORM_TASK = '''
import torch
from torch import nn

from tasks import Task, TaskData


def load_data(*, data_dir=None):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TaskData.split(x, y, source="generated blobs, 400 points, seed 0")


def build_model(params):
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


task = Task(name="bn", load_data=load_data, build_model=build_model, loss="cross_entropy",
            batch_size=32)
'''


@pytest.mark.slow
def test_a_batchnorm_model_falls_back_to_one_trial_at_a_time(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bn_task.py").write_text(BATCHNORM_TASK)
    monkeypatch.chdir(tmp_path)
    result = invoke("search", "--task", "bn_task.py:task", "--epochs", "2", "--device", "cpu",
                    "--optimizers", "adam,adamw", "--no-defaults", "--seed", "0",
                    "--n-trials", "4", "--population", "2", "--home", str(home))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "--population 2: these trials cannot train as one stacked model" in text
    assert text.count("cannot train as one stacked model") == 1  # said once, not per batch
    trials = finished(home, "bn")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)


TANH_TASK = BATCHNORM_TASK.replace("nn.BatchNorm1d(16), nn.ReLU()", "nn.Tanh()").replace(
    'name="bn"', 'name="tanh"')


def test_a_model_stacked_through_vmap_on_a_cpu_gets_a_notice_and_still_stacks(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tanh_task.py").write_text(TANH_TASK)
    monkeypatch.chdir(tmp_path)
    result = invoke("search", "--task", "tanh_task.py:task", "--epochs", "1", "--device", "cpu",
                    "--optimizers", "adam", "--no-defaults", "--seed", "0", "--n-trials", "4",
                    "--population", "2", "--pruner", "none", "--home", str(home))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert ("--population 2: on a CPU this model trains stacked through vmap, which was "
            "measured slower than one trial at a time for a convolutional model") in text
    assert text.count("through vmap") == 1  # said once per architecture
    trials = finished(home, "tanh")
    assert len(trials) == 4 and all(t.user_attrs["population"] == 2 for t in trials)


@pytest.mark.slow
def test_jobs_and_a_worker_claim_populations_within_one_budget(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `opttune worker` and then `resume --jobs 2` train populations of one study side by
    side (the worker and both jobs each hold a stacked population at the gate at once): the
    budget stays exact, both sides trained stacked trials, each its own run."""
    from tuner.study.trial_attrs import OWNER_ATTR

    gate = tmp_path / "gate"
    # One schedule kind (schedules may differ within a population; pinned all the same).
    common = ("--task", pop_gate_task(tmp_path), "--epochs", "2", "--device", "cpu",
              "--optimizers", "adam,adamw", "--scheduler", "none", "--no-defaults",
              "--pruner", "none", "--home", str(home))
    made = invoke("search", "--study", "shared", "--n-trials", "12", "--population", "2",
                  "--jobs", "0", *common)
    assert made.exit_code == 0, made.output
    worker = subprocess.Popen([sys.executable, "-m", "tuner", "worker", "shared", "--home",
                               str(home)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=gate_env(gate, OMP_NUM_THREADS="1"))
    held: list[str] = []
    try:
        wait_reached(gate, 1, proc=worker)  # the worker holds its first population

        def open_when_all_hold() -> None:  # the jobs run in `resume`, in this process
            try:
                held.extend(wait_reached(gate, 3, proc=worker))
            except AssertionError:
                pass
            finally:
                open_gate(gate)

        opener = threading.Thread(target=open_when_all_hold, daemon=True)
        opener.start()
        monkeypatch.setenv(GATE_ENV, str(gate))  # the jobs inherit it; this process trains none
        jobs = invoke("resume", "shared", "--jobs", "2", "--home", str(home))
        monkeypatch.delenv(GATE_ENV)
        worker_out = worker.communicate(timeout=300)[0].decode()
    finally:
        open_gate(gate)
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert jobs.exit_code == 0, jobs.output
    assert worker.returncode == 0, worker_out
    opener.join()  # it opened the gate: the jobs could not have finished otherwise
    trials = load(home, "shared").get_trials(deepcopy=False)
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    by_worker = [t for t in trials if t.system_attrs[OWNER_ATTR]["pid"] == worker.pid]
    by_jobs = [t for t in trials if t not in by_worker]
    holders = {int(ticket.split("-")[0]) for ticket in held}
    assert len(holders) == 3 and worker.pid in holders  # all three held populations at once
    assert {t.system_attrs[OWNER_ATTR]["pid"] for t in by_jobs} == holders - {worker.pid}
    for side in (by_worker, by_jobs):
        assert [t.user_attrs.get("population") for t in side].count(2) >= 2, \
            [(t.number, t.user_attrs.get("population")) for t in trials]
    assert len({run_of(home, t).info.run_id for t in trials}) == 12
