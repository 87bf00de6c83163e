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

Importing this module does not import torch (``import tasks`` imports it, and every command
does); the built-in tasks' modules do, and :mod:`tasks.registry` loads them when asked.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.data import TaskData
from tasks.objectives import LOSSES, Direction, objective
from tuner.errors import SpaceError, TaskError
from tuner.space.dsl import ParamValue
from tuner.space.searchspace import parse_task_params, task_param_values

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    build_model: Callable[[Mapping[str, ParamValue]], torch.nn.Module]
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
        return objective(self.loss)[0]

    @property
    def direction(self) -> Direction:
        return objective(self.loss)[1]

    def read_data(self, *, data_dir: str | Path | None = None) -> TaskData:
        """Call `load_data`, passing `data_dir` only if it takes one, and check the result."""
        from tasks.checks import check_data  # noqa: PLC0415  (torch: `import tasks` stays light)

        wants_dir = _accepts(self.load_data, "data_dir")
        data_dir = data_dir_arg(data_dir)
        if data_dir is not None and not wants_dir:
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
                known = (f"its hyperparameters are {', '.join(specs)}" if specs else
                         "it declares none (Task.hyperparams)")
                raise SpaceError(f"--param {key}={spec}: task {self.name!r} has no "
                                 f"hyperparameter {key!r}; {known}")
            specs[key] = spec
        return specs

    def default_params(self) -> dict[str, ParamValue]:
        """A value for each hyperparameter: the fixed value, first choice or range middle."""
        return task_param_values(parse_task_params(self.hyperparams))

    def parameter_count(self) -> int | None:
        """Trainable parameters of the model at the default hyperparameters (None: unknown)."""
        try:
            model = self.build_model(self.default_params())
            return sum(p.numel() for p in model.parameters() if p.requires_grad)
        except Exception:  # a lazy module or a broken factory: listing must still work
            return None


def _accepts(fn: Callable[..., object], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def data_dir_arg(data_dir: str | Path | None) -> Path | None:
    return None if data_dir is None else Path(data_dir).expanduser()
