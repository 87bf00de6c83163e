"""The task protocol: a task supplies a model, data and a metric, never a training loop.

A :class:`Task` is what ``--task`` names. It holds:

* ``load_data(*, data_dir)`` → :class:`TaskData`: train, validation and test tensors, held in
  memory and moved to the training device once (``data_dir`` is ``--data-dir``, or None);
* ``build_model(params)`` → ``torch.nn.Module``: a fresh, untrained model per trial, given the
  sampled values of the task's own hyperparameters (``params["hidden"]`` …);
* ``loss``: ``"cross_entropy"`` (classification: the model outputs one score per class, the
  targets are integer labels; metric ``val_acc``, maximised) or ``"mse"`` (regression: one
  output per target, float targets; metric ``val_mse``, minimised);
* ``hyperparams``: the task's knobs as name → search-space string (``"64,128,256"`` a choice,
  ``"0:0.5"`` a range, ``"64"`` a fixed value), searched next to the optimizer's.

Importing this module does not import torch, so that listing tasks and the CLI's help stay
instant; tasks import torch inside their functions.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LOSSES = ("cross_entropy", "mse")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TaskData:
    """Train, validation and test tensors (on the CPU) and where they came from.

    Inputs (``*_x``) have one sample per row, any shape after that; targets (``*_y``) are
    integer class labels (``torch.long``, shape ``(N,)``) for cross entropy, float values for
    MSE. The validation split is what a search scores; the test split is only for `retrain`
    (it may be empty when there is none).
    `source` says where the data came from (stored with the study; a study never mixes
    sources); `notice` is shown to the user when the data is, say, a fallback subset.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    notice: str | None = None

    @classmethod
    def split(cls, x: Any, y: Any, *, source: str, val_fraction: float = 0.1,
              test_fraction: float = 0.2, seed: int = 0, notice: str | None = None) -> TaskData:
        """Split one data set into train, validation and test with a fixed seed.

        `x` and `y` may be tensors or numpy arrays; float inputs become float32, integer
        targets ``torch.long`` and float targets float32.
        """
        import torch

        xt, yt = _as_tensor(x), _as_tensor(y, labels=True)
        if len(xt) != len(yt):
            raise ValueError(f"x and y must have one row per sample, but x has {len(xt)} rows "
                             f"and y has {len(yt)}")
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(round(len(xt) * test_fraction)))
        n_val = max(1, int(round(len(xt) * val_fraction)))
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return cls(xt[train], yt[train], xt[val], yt[val], xt[test], yt[test], source=source,
                   notice=notice)


@dataclass(frozen=True, kw_only=True)
class Task:
    """A model factory, data, a loss and a metric with its direction (see the module doc).

    `name` names the study by default and shows in `opttune tasks`, with `summary` (what it
    trains), `data` and `model` (one line each). `batch_size` is the batch size when the
    search space does not choose one. `ref` is how to find the task again; the registry
    fills it in (a built-in name, ``module:attr``, or an absolute ``file.py:attr``).
    """

    name: str
    load_data: Callable[..., TaskData]
    build_model: Callable[[Mapping[str, Any]], torch.nn.Module]
    loss: str = "cross_entropy"
    summary: str = ""
    data: str = ""
    model: str = ""
    batch_size: int = 128
    hyperparams: Mapping[str, str] = field(default_factory=dict)
    ref: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Task name must be letters, digits, '.', '_' or '-' (it names the "
                             f"study), but got {self.name!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"Task loss must be 'cross_entropy' (classification) or 'mse' "
                             f"(regression), but got {self.loss!r}")
        for attr in ("load_data", "build_model"):
            if not callable(getattr(self, attr)):
                raise ValueError(f"Task {attr} must be a function, but got "
                                 f"{type(getattr(self, attr)).__name__}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"Task batch_size must be an integer >= 1, but got "
                             f"{self.batch_size!r}")
        for key, spec in dict(self.hyperparams).items():
            if not isinstance(spec, str):
                raise ValueError(f"Task hyperparams[{key!r}] must be a search-space string "
                                 f"such as '64,128,256' or '0:0.5', but got {spec!r}")

    @property
    def metric(self) -> str:
        """The objective's name as logged: val_acc (maximised) or val_mse (minimised)."""
        return "val_acc" if self.loss == "cross_entropy" else "val_mse"

    @property
    def direction(self) -> str:
        return "maximize" if self.loss == "cross_entropy" else "minimize"

    def read_data(self, *, data_dir: str | Path | None = None) -> TaskData:
        """Call `load_data`, passing `data_dir` only if it takes one, and check the result."""
        from tasks.checks import check_data

        wants_dir = _accepts(self.load_data, "data_dir")
        data_dir = data_dir_arg(data_dir)
        if data_dir is not None and not wants_dir:
            from tuner.errors import TaskError

            raise TaskError(f"task {self.name!r} reads no data folder (its load_data takes no "
                            f"data_dir), so --data-dir {data_dir} cannot be used; drop it")
        data = self.load_data(data_dir=data_dir) if wants_dir else self.load_data()
        check_data(self, data)
        return data

    def param_specs(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The task's hyperparameters with `overrides` (``--param NAME=SPEC``) applied."""
        specs = dict(self.hyperparams)
        for key, spec in (overrides or {}).items():
            if key not in specs:
                from tuner.errors import SpaceError

                known = (f"its hyperparameters are {', '.join(specs)}" if specs else
                         "it declares none (Task.hyperparams)")
                raise SpaceError(f"--param {key}={spec}: task {self.name!r} has no "
                                 f"hyperparameter {key!r}; {known}")
            specs[key] = spec
        return specs

    def default_params(self) -> dict[str, Any]:
        """A value for each hyperparameter: the fixed value, first choice or range middle."""
        from tuner.space.searchspace import parse_task_params, task_param_values

        return task_param_values(parse_task_params(self.hyperparams))

    def parameter_count(self) -> int | None:
        """Trainable parameters of the model at the default hyperparameters (None: unknown)."""
        try:
            model = self.build_model(self.default_params())
            return sum(p.numel() for p in model.parameters() if p.requires_grad)
        except Exception:  # a lazy module or a broken factory: listing must still work
            return None


def _as_tensor(values: Any, *, labels: bool = False) -> torch.Tensor:
    import torch

    tensor = torch.as_tensor(values)
    if tensor.is_floating_point():
        return tensor.float()
    if labels and not tensor.is_complex():
        return tensor.long()  # integer (or bool) targets are class labels
    return tensor


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale each feature to mean 0, std 1 with the training split's statistics only."""
    import torch

    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays 0
    return tuple((t - mean) / std for t in (train, *others))


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split train into train/validation with a fixed seed, the same for every trial."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def data_dir_arg(data_dir: str | Path | None) -> Path | None:
    return None if data_dir is None else Path(data_dir).expanduser()
