"""Population training: K trials of one model trained at once, as one stacked model.

One job: train K same-shaped trials (same task params, batch size, epochs, schedule and
update rule; their own optimizer hyperparameters and seeds) as one model whose parameters
carry a leading member dimension (HFTA, Wang et al. MLSys 2021), so that K small matmuls
become one batched matmul and the per-step Python overhead is paid once, not K times. Each
member computes what :func:`tuner.training.loop.fit` computes for the same trial alone, up
to float re-association: it is built under its own seed exactly as ``fit`` builds it, draws
its own data order from its own generator exactly as ``fit`` does, follows the same torch
learning-rate schedule (a torch scheduler over one param group per member), and takes
torch's own update for its family.

Design choices, measured on a 2-core AMD EPYC shared with other work (one torch thread;
best of interleaved runs; `python -m bench.population --clock cpu` for whole epochs, on
4,096 Fashion-MNIST samples; the machine was loaded, so only ratios measured side by side
count):

* The forward runs as ``vmap(functional_call)`` over the stacked parameters, or, for a plain
  ``nn.Sequential`` of ``Linear``/``ReLU`` on flat inputs, as hand-written ``baddbmm`` calls
  (its weights held as (K, in, out), the operand baddbmm takes). Forward+backward per step,
  MLP 784-256-128-10, batch 128, K=16: baddbmm 43 ms, vmap 48 ms, 16 solo models 58 ms;
  digits MLP 64-64-10, batch 16, K=8: baddbmm 1.1 ms, vmap 1.7 ms (vmap's per-call cost
  dominates small models). Whole epochs, K=8, Adam: 0.12 s per trial-epoch with baddbmm,
  0.15 s with vmap; so the fast path is kept.
* Per-member losses are one unreduced loss over the K·B samples, then a mean per member:
  ``vmap`` of the loss function cost 0.4 ms more per step (K=8, B=16).
* The update: where torch has a fused kernel for the family on the device (SGD, Adam,
  AdamW, Adagrad on CPU and CUDA), each member calls it on its own slices of the stacked
  tensors ("fused"): the same arithmetic as ``fit``'s optimizer, one pass over memory. The
  alternative, batched tensor ops over the stacks with per-member hyperparameters as
  (K, 1, …) tensors ("batched"), costs one pass per op: Adam, K=8, the MLP, 2.3 ms per step
  fused against 12 ms batched (SGD with momentum 0.7 against 2.2 ms); whole epochs 0.12
  against 0.16 s per trial-epoch. Written naively (a new temporary of the whole stack per
  op) the batched Adam took 57-70 ms: the batched rules therefore work in place on
  preallocated scratch tensors. They serve the families without a fused kernel (RMSprop,
  NAdam, RAdam, which ``fit`` runs with torch's foreach kernels) and devices without one;
  their kernel count does not grow with K, which is what a GPU needs (not measured here).
  ``update="batched"`` forces them.
* The per-step learning rate of each member is read from a torch scheduler built by
  :func:`tuner.training.optimizers.build_scheduler` over one param group per member, so
  schedules are torch's own, recursion and rounding included.
* Overall, one thread: 1.3-1.55x fewer CPU seconds per trial-epoch than one trial at a time
  at K = 4-16, none at K=1 (the MLP at batch 128 is compute-bound: stacking saves the
  per-step overhead and small-matmul inefficiency, not FLOPs).

What cannot be exact: float re-association (batched matmuls, per-member loss means, the
batched rules' op order), which grows over training as chaotic training does; and dropout or
any other randomness in the forward: members draw from the global generator under
``vmap(randomness="different")``, so a member's masks differ from its solo run's.

Members leave: a member whose training loss stops being finite (checked every 50 steps on
CPU, once an epoch elsewhere, as ``fit`` does) or whose ``on_epoch`` raises (a pruner's
TrialPruned) leaves the population; the stacked tensors shrink so it stops costing compute.

Models that cannot be stacked (BatchNorm and other modules with running statistics updated
in place, data-dependent control flow, forwards that fail under vmap or read tensors that
are not their parameters) are detected by a cheap check before training:
:func:`stack_check` returns the reason, :func:`fit_population` raises :class:`CannotStack`.
"""

from __future__ import annotations

import abc
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call, vmap

from tasks.base import Task
from tasks.losses import summed
from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES
from tuner.training import optimizers
from tuner.training.loop import DeviceData, Diverged, EpochResult

_CPU_DIVERGENCE_CHECK = 50  # steps between finiteness checks on CPU, as in loop.fit
_EVAL_CHUNK = 8192  # samples per validation chunk of one member, as in loop.fit
FORWARDS = ("auto", "vmap", "bmm")
UPDATES = ("auto", "fused", "batched")

# torch optimizer class → the stacked update rule that implements it. Families that map to
# the same rule share a step: sgd/momentum/nesterov (per-member momentum and Nesterov flag),
# adam/adamw (per-member coupled or decoupled weight decay).
_RULES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "RMSprop": "rmsprop",
          "Adagrad": "adagrad", "NAdam": "nadam", "RAdam": "radam"}
# Rules with a torch fused kernel, on these device types (as tuner.training.optimizers uses).
_FUSED_RULES = frozenset({"sgd", "adam", "adagrad"})
_FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})


class CannotStack(Exception):
    """These configs or this model cannot train as one population; `reason` says why (one
    line). Nothing was trained: train the members one at a time with ``fit``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class MemberResult:
    """One member's outcome: its epochs, and what stopped it early (None: it ran them all).

    `stopped` is :class:`Diverged` (the same fields as ``fit`` raises) or whatever
    ``on_epoch`` raised for it; :meth:`unwrap` returns the epochs or raises that, so a caller
    can treat a member exactly as a call of ``fit``.
    """

    index: int  # position in the configs given to fit_population
    config: TrialConfig
    seed: int
    epochs: list[EpochResult] = field(default_factory=list)
    stopped: Exception | None = None

    def unwrap(self) -> list[EpochResult]:
        if self.stopped is not None:
            raise self.stopped
        return self.epochs


@dataclass(frozen=True)
class Grouping:
    """Configs sorted into populations: `groups` (indices into the configs, 2 or more each)
    can each train as one population; `alone` maps the others to why (one line)."""

    groups: list[list[int]]
    alone: dict[int, str]


# -- which configs can share a step -----------------------------------------------------

def _torch_group(config: TrialConfig) -> dict[str, Any]:
    """Every hyperparameter of the torch optimizer `fit` would build for `config`, torch's
    defaults filled in; raises what that constructor raises for invalid values."""
    kwargs = optimizers.optimizer_kwargs(config)
    cls: Any = getattr(torch.optim, FAMILIES[config.optimizer].torch_class)
    group = dict(cls([torch.zeros(1, requires_grad=True)], **kwargs).param_groups[0])
    group.pop("params")
    return group


def _unsupported(rule: str, group: dict[str, Any]) -> str | None:
    """Settings no family uses and no stacked rule implements (a custom fixed value)."""
    checks = [("maximize", False), ("amsgrad", False), ("centered", False), ("dampening", 0),
              ("capturable", False), ("differentiable", False)]
    for key, plain in checks:
        if key in group and group[key] != plain:
            return f"{key}={group[key]!r} has no stacked {rule} rule"
    if isinstance(group["lr"], torch.Tensor):
        return "a tensor learning rate has no stacked rule"
    return None


def _step_key(config: TrialConfig) -> tuple[tuple[str, str], ...] | str:
    """What must be equal for configs to share a step, or why `config` cannot share any."""
    family = FAMILIES.get(config.optimizer)
    if family is None:
        return f"unknown optimizer {config.optimizer!r}"
    rule = _RULES.get(family.torch_class)
    if rule is None:
        return f"{config.optimizer} ({family.torch_class}) has no stacked update rule"
    try:
        group = _torch_group(config)
    except Exception as exc:  # the same error fit would raise: let fit report it
        return f"its optimizer settings are invalid: {_first_line(exc)}"
    problem = _unsupported(rule, group)
    if problem is not None:
        return problem
    params = json.dumps(config.task_params, sort_keys=True, default=repr)
    return (("update rule", rule), ("batch size", str(config.batch_size)),
            ("epochs", str(config.epochs)), ("schedule", config.scheduler),
            ("task params", params))


def group_configs(configs: Sequence[TrialConfig], *,
                  max_members: int | None = None) -> Grouping:
    """Sort `configs` into groups that can each share one stacked training step.

    Configs share a step when their task params (the architecture), batch size, epochs,
    schedule kind and update rule are equal; the update rule joins sgd, momentum and
    nesterov, and adam and adamw. Groups keep the configs' order; with `max_members`, a
    larger group is split into near-equal parts. A config alone in its group, or that no
    rule can stack, is in `alone` with the reason. The model itself is checked by
    :func:`stack_check` (it needs the task and data).
    """
    if max_members is not None and max_members < 2:
        raise ValueError(f"max_members must be at least 2 (a population of one gains nothing), "
                         f"but got {max_members}")
    buckets: dict[tuple[tuple[str, str], ...], list[int]] = {}
    alone: dict[int, str] = {}
    for i, config in enumerate(configs):
        key = _step_key(config)
        if isinstance(key, str):
            alone[i] = key
        else:
            buckets.setdefault(key, []).append(i)
    groups: list[list[int]] = []
    for key, members in buckets.items():
        if len(members) == 1:
            alone[members[0]] = ("no other config shares its " + ", ".join(
                f"{name} {value}" for name, value in key))
            continue
        parts = 1 if max_members is None else math.ceil(len(members) / max_members)
        size, extra = divmod(len(members), parts)
        start = 0
        for p in range(parts):
            end = start + size + (1 if p < extra else 0)
            groups.append(members[start:end])
            start = end
    return Grouping(groups, dict(sorted(alone.items())))


def _shared_step_reason(configs: Sequence[TrialConfig]) -> str | None:
    keys = [_step_key(c) for c in configs]
    for i, key in enumerate(keys):
        if isinstance(key, str):
            return f"config {i} ({configs[i].optimizer}) cannot share a step: {key}"
    first = keys[0]
    assert not isinstance(first, str)
    for i, key in enumerate(keys[1:], start=1):
        assert not isinstance(key, str)
        for (name, value), (_, other) in zip(first, key, strict=True):
            if value != other:
                return (f"config {i} cannot share a step with config 0: its {name} is {other}, "
                        f"config 0's is {value} (a population shares task params, batch size, "
                        f"epochs, schedule and update rule)")
    return None


# -- the stacked model -------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _plain_mlp(model: torch.nn.Module) -> bool:
    """A Sequential of exactly Linear and ReLU modules (the baddbmm fast path)."""
    return (type(model) is torch.nn.Sequential and len(model) > 0
            and all(type(m) in (torch.nn.Linear, torch.nn.ReLU) for m in model))


class _Stack:
    """K members' parameters and buffers stacked on a leading dimension, and the forward."""

    def __init__(self, models: Sequence[torch.nn.Module], *, forward: str,
                 flat_input: bool) -> None:
        base = models[0]
        self.base = base
        self.param_names = [name for name, _ in base.named_parameters()]
        self.buffer_names = [name for name, _ in base.named_buffers()]
        with torch.no_grad():
            self.params = [
                torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_(
                    base.get_parameter(n).requires_grad) for n in self.param_names]
            self.buffers = [torch.stack([m.get_buffer(n) for m in models])
                            for n in self.buffer_names]
        self.bmm = forward == "bmm" or (forward == "auto" and flat_input and _plain_mlp(base))
        if self.bmm and not (flat_input and _plain_mlp(base)):
            raise CannotStack(f"forward='bmm' needs an nn.Sequential of only Linear and ReLU on "
                              f"flat inputs, but got a {type(base).__name__}")
        self._layers: list[tuple[int, int | None] | None] = []  # (weight, bias) or None: ReLU
        if self.bmm:
            index = {n: i for i, n in enumerate(self.param_names)}
            for name, module in base.named_children():
                if isinstance(module, torch.nn.Linear):
                    w = index[f"{name}.weight"]
                    self._layers.append((w, index.get(f"{name}.bias")))
                    # Held as (K, in, out), the operand baddbmm takes: the gradient then comes
                    # back contiguous in the parameter's own layout (as the (K, out, in) view of
                    # a transpose it would not be), which the fused kernels need and every
                    # elementwise update runs faster on. The update does not care about layout.
                    with torch.no_grad():
                        self.params[w] = self.params[w].detach().transpose(1, 2).contiguous(
                            ).requires_grad_(self.params[w].requires_grad)
                else:
                    self._layers.append(None)
        self._train = vmap(self._call, in_dims=(0, 0, 0), randomness="different")
        self._shared = vmap(self._call, in_dims=(0, 0, None), randomness="different")

    @property
    def size(self) -> int:
        return len(self.params[0])

    def _call(self, params: tuple[torch.Tensor, ...], buffers: tuple[torch.Tensor, ...],
              x: torch.Tensor) -> torch.Tensor:
        tensors = dict(zip(self.param_names, params, strict=True))
        tensors.update(zip(self.buffer_names, buffers, strict=True))
        out: torch.Tensor = functional_call(self.base, tensors, (x,))
        return out

    def _bmm(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self._layers:
            if layer is None:
                h = torch.relu(h)
                continue
            weight = self.params[layer[0]]  # (K, in, out)
            if layer[1] is None:
                h = torch.bmm(h, weight)
            else:
                h = torch.baddbmm(self.params[layer[1]].unsqueeze(1), h, weight)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, …) inputs, one batch per member → (K, B, …) outputs."""
        if self.bmm:
            return self._bmm(x)
        out: torch.Tensor = self._train(tuple(self.params), tuple(self.buffers), x)
        return out

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """(B, …) inputs seen by every member → (K, B, …) outputs."""
        if self.bmm:
            return self._bmm(x.unsqueeze(0).expand(self.size, *x.shape))
        out: torch.Tensor = self._shared(tuple(self.params), tuple(self.buffers), x)
        return out

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def keep(self, rows: torch.Tensor) -> None:
        with torch.no_grad():
            self.params = [p.detach().index_select(0, rows).requires_grad_(p.requires_grad)
                           for p in self.params]
            self.buffers = [b.index_select(0, rows) for b in self.buffers]


def _member_losses(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) training losses, each the mean that tasks.losses.loss_function takes for one
    member; one unreduced loss over all K·B samples (vmap of the loss costs more per step)."""
    k = y.shape[0]
    if loss == "mse":
        each = torch.nn.functional.mse_loss(out.reshape(y.shape), y, reduction="none")
    elif loss == "cross_entropy":
        each = torch.nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(0, 1),
                                                 reduction="none")
    else:
        raise CannotStack(f"loss {loss!r} has no per-member form; known: cross_entropy, mse")
    return each.reshape(k, -1).mean(1)


def _batch_statistics(model: torch.nn.Module) -> str | None:
    """Why a normalisation layer of `model` cannot be stacked, or None."""
    for name, module in model.named_modules():
        where = f"{type(module).__name__}" + (f" at {name!r}" if name else "")
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and (
                module.track_running_stats):
            return (f"{where} updates running statistics in place during training, which a "
                    f"stacked model cannot keep per member")
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return (f"{where} normalises over the batch, and fit drops a one-sample last batch "
                    f"for it, which a stacked model does not")
    return None


def _build(task: Task, config: TrialConfig, seed: int, dev: torch.device) -> torch.nn.Module:
    """A member as fit builds it: the seed, then the model, nothing drawn between."""
    torch.manual_seed(seed)
    try:
        return task.build_model(config.task_params).to(dev)
    except Exception as exc:  # fit, run per trial, reports it as that trial's failure
        raise CannotStack(f"building the model fails: {_first_line(exc)}") from exc


def _check_models(loss: str, models: Sequence[torch.nn.Module], x: torch.Tensor,
                  y: torch.Tensor, *, forward: str) -> str | None:
    """Why `models` (members built for one config) cannot train stacked, or None."""
    if loss not in ("cross_entropy", "mse"):
        return f"loss {loss!r} has no per-member form; known: cross_entropy, mse"
    base = models[0]
    reason = _batch_statistics(base)
    if reason is not None:
        return reason
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in base.parameters()):
        return "the model has lazy (uninitialised) parameters, which cannot be stacked"
    shapes = [[(n, tuple(p.shape), p.dtype) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes[1:]):
        return ("two builds of the model for the same task params have different parameters, "
                "so they cannot be stacked")
    if not shapes[0]:
        return "the model has no parameters to train"
    x, y = x[:2], y[:2]
    k = len(models)
    try:
        stack = _Stack(models, forward=forward, flat_input=x.dim() == 2)
        stack.train(True)
        out = stack.forward(x.unsqueeze(0).expand(k, *x.shape))
        losses = _member_losses(loss, out, y.unsqueeze(0).expand(k, *y.shape))
        trainable = [p for p in stack.params if p.requires_grad]
        torch.autograd.grad(losses.sum(), trainable, allow_unused=True)
        with torch.inference_mode():
            stack.train(False)
            stacked = stack.forward_shared(x).float()
            for i, model in enumerate(models):
                model.eval()
                alone = model(x).float()
                scale = max(1.0, float(alone.abs().max()))
                if stacked[i].shape != alone.shape or not torch.allclose(
                        stacked[i], alone, rtol=1e-4, atol=1e-4 * scale):
                    return ("the stacked forward differs from the members' own forwards: the "
                            "model reads tensors that are not its parameters or buffers")
    except CannotStack as exc:
        return exc.reason
    except Exception as exc:  # whatever a user's model does under vmap: report, never crash
        return f"its forward/backward fails when stacked: {_first_line(exc)}"
    finally:
        for model in models:
            model.train()
    return None


def stack_check(task: Task, data: DeviceData, config: TrialConfig, *, device: str,
                forward: str = "auto") -> str | None:
    """None when `task`'s model for `config.task_params` can train stacked, else why not
    (one line). Cheap: builds two members and runs one stacked forward/backward on two
    training samples; the global random state is left as it was."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        try:
            models = [_build(task, config, seed, dev) for seed in (0, 1)]
        except CannotStack as exc:
            return exc.reason
    return _check_models(task.loss, models, data.train_x, data.train_y, forward=forward)


# -- per-member updates ------------------------------------------------------------------

class _Table:
    """Per-member scalars (rows × K, computed in double as torch computes its scalars),
    moved to the device once per step and viewed as (K, 1, …) to broadcast over a stack."""

    def __init__(self, rows: Sequence[Sequence[float]]) -> None:
        self._host = torch.tensor(rows, dtype=torch.float64)
        self._views: dict[tuple[torch.dtype, torch.device, int], list[torch.Tensor]] = {}

    def like(self, p: torch.Tensor) -> list[torch.Tensor]:
        key = (p.dtype, p.device, p.dim())
        views = self._views.get(key)
        if views is None:
            # float32 arithmetic, as torch applies a Python-float scalar to float32 tensors.
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            table = self._host.to(device=p.device, dtype=dtype)
            views = list(table.view(*table.shape, *([1] * (p.dim() - 1))).unbind(0))
            self._views[key] = views
        return views


class _Update(abc.ABC):
    """Optimizer state over stacked (K, …) parameters and one step for all members."""

    states: tuple[str, ...] = ()

    def __init__(self, groups: list[dict[str, Any]], params: Sequence[torch.Tensor]) -> None:
        self.groups = groups
        self.t = 0  # steps taken: members start together, so they all share the count
        self.data = [p.detach() for p in params]
        self.state = {name: [self._initial(name, p) for p in self.data] for name in self.states}
        self._refresh()

    def _initial(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    def _refresh(self) -> None:  # noqa: B027  (a hook: most updates derive nothing)
        """Recompute what depends on the members present."""

    def keep(self, rows: torch.Tensor, positions: Sequence[int],
             params: Sequence[torch.Tensor]) -> None:
        self.groups = [self.groups[i] for i in positions]
        self.data = [p.detach() for p in params]
        self.state = {name: [t.index_select(0, rows) for t in tensors]
                      for name, tensors in self.state.items()}
        self._refresh()

    @abc.abstractmethod
    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        """One optimizer step of every member, at the members' learning rates `lrs`."""


class _Batched(_Update):
    """Batched tensor ops over the stacks, hyperparameters as (K, 1, …) tensors, in place on
    preallocated scratch tensors (a temporary of the whole stack per op costs more than the
    op: see the module docstring)."""

    def _refresh(self) -> None:
        self.scratch = [torch.empty_like(p) for p in self.data]
        decays = [(g["weight_decay"] != 0, bool(g.get("decoupled_weight_decay", False)))
                  for g in self.groups]
        self.coupled = any(wd and not decoupled for wd, decoupled in decays)
        self.decoupled = any(wd and decoupled for wd, decoupled in decays)

    def _table(self, lrs: Sequence[float],
               values: Callable[[dict[str, Any], float], Sequence[float]]) -> _Table:
        """Rows: the coupled weight decay, the decoupled decay factor, then `values`'s."""
        columns = []
        for group, lr in zip(self.groups, lrs, strict=True):
            wd = group["weight_decay"]
            decoupled = group.get("decoupled_weight_decay", False)
            columns.append((0.0 if decoupled else wd, 1 - lr * wd if decoupled else 1.0,
                            *values(group, lr)))
        return _Table([list(row) for row in zip(*columns, strict=True)])

    def _weight_decay(self, p: torch.Tensor, g: torch.Tensor, wd: torch.Tensor,
                      decay: torch.Tensor) -> None:
        # A member without (that kind of) decay multiplies by 1 or adds 0 * p: exact.
        if self.decoupled:
            p.mul_(decay)  # AdamW's p *= 1 - lr * wd
        if self.coupled:
            g.addcmul_(p, wd)  # L2: grad + wd * p

    def _pairs(self, grads: Sequence[torch.Tensor | None]
               ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        # A parameter without a gradient is skipped, as torch's optimizers skip it.
        return [(i, p, g) for i, (p, g) in enumerate(zip(self.data, grads, strict=True))
                if g is not None]

    def _moments(self, i: int, g: torch.Tensor, w1: torch.Tensor, beta2: torch.Tensor,
                 w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam's moment updates: m lerps to g by 1 - beta1, v = beta2 v + (1 - beta2) g²."""
        m, v, s = self.state["exp_avg"][i], self.state["exp_avg_sq"][i], self.scratch[i]
        m.lerp_(g, w1)
        v.mul_(beta2).addcmul_(torch.mul(g, g, out=s), w2)
        return m, v


class _SgdBatched(_Batched):
    """torch.optim.SGD (dampening 0) with per-member lr, weight decay, momentum, Nesterov."""

    states = ("momentum_buffer",)

    def _refresh(self) -> None:
        super()._refresh()
        self.any_momentum = any(g["momentum"] != 0 for g in self.groups)
        nesterov = [bool(g["nesterov"]) for g in self.groups]
        self.all_nesterov, self.any_nesterov = all(nesterov), any(nesterov)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        table = self._table(lrs, lambda g, lr: (-lr, g["momentum"], float(g["nesterov"])))
        for i, p, g in self._pairs(grads):
            wd, decay, neg_lr, momentum, nesterov = table.like(p)
            self._weight_decay(p, g, wd, decay)
            update = g
            if self.any_momentum:
                # The buffer starts at zero, so the first step leaves it equal to the gradient,
                # as torch's clone does; a member without momentum gets buf = grad every step.
                buf = self.state["momentum_buffer"][i]
                buf.mul_(momentum).add_(g)
                if self.all_nesterov:
                    update = g.addcmul_(buf, momentum)
                elif self.any_nesterov:
                    g.addcmul_(buf, momentum)
                    update = torch.where(nesterov > 0.5, g, buf, out=self.scratch[i])
                else:
                    update = buf
            p.addcmul_(update, neg_lr)


class _AdamBatched(_Batched):
    """torch.optim.Adam and AdamW: per-member lr, betas, eps, and coupled (Adam) or
    decoupled (AdamW) weight decay; bias correction as torch computes it."""

    states = ("exp_avg", "exp_avg_sq")

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        t = self.t

        def values(g: dict[str, Any], lr: float) -> tuple[float, ...]:
            beta1, beta2 = g["betas"]
            return (1 - beta1, beta2, 1 - beta2, (1 - beta2**t) ** 0.5, g["eps"],
                    -lr / (1 - beta1**t))

        table = self._table(lrs, values)
        for i, p, g in self._pairs(grads):
            wd, decay, w1, beta2, w2, bc2_sqrt, eps, neg_step = table.like(p)
            self._weight_decay(p, g, wd, decay)
            m, v = self._moments(i, g, w1, beta2, w2)
            s = torch.sqrt(v, out=self.scratch[i]).div_(bc2_sqrt).add_(eps)
            p.addcmul_(torch.div(m, s, out=s), neg_step)


class _RmspropBatched(_Batched):
    """torch.optim.RMSprop (not centered): per-member lr, alpha, eps, weight decay, momentum."""

    states = ("square_avg", "momentum_buffer")

    def _refresh(self) -> None:
        super()._refresh()
        self.any_momentum = any(g["momentum"] > 0 for g in self.groups)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        table = self._table(lrs, lambda g, lr: (g["alpha"], 1 - g["alpha"], g["eps"],
                                                g["momentum"], -lr))
        for i, p, g in self._pairs(grads):
            wd, decay, alpha, w, eps, momentum, neg_lr = table.like(p)
            self._weight_decay(p, g, wd, decay)
            sq, s = self.state["square_avg"][i], self.scratch[i]
            sq.mul_(alpha).addcmul_(torch.mul(g, g, out=s), w)
            avg = torch.sqrt(sq, out=s).add_(eps)
            if self.any_momentum:
                # momentum 0: buf = grad/avg each step, torch's plain update.
                buf = self.state["momentum_buffer"][i]
                buf.mul_(momentum).addcdiv_(g, avg)
                p.addcmul_(buf, neg_lr)
            else:
                p.addcmul_(g.div_(avg), neg_lr)


class _AdagradBatched(_Batched):
    """torch.optim.Adagrad: per-member lr, lr decay, eps, weight decay, initial accumulator."""

    states = ("sum",)

    def _initial(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return _accumulator(self.groups, p)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        t = self.t
        table = self._table(lrs, lambda g, lr: (g["eps"], -lr / (1 + (t - 1) * g["lr_decay"])))
        for i, p, g in self._pairs(grads):
            wd, decay, eps, neg_lr = table.like(p)
            self._weight_decay(p, g, wd, decay)
            total = self.state["sum"][i]
            total.addcmul_(g, g)
            std = torch.sqrt(total, out=self.scratch[i]).add_(eps)
            p.addcmul_(g.div_(std), neg_lr)


class _NadamBatched(_Batched):
    """torch.optim.NAdam: per-member lr, betas, eps, momentum decay, weight decay (coupled
    or decoupled); each member's mu product is kept as torch keeps it."""

    states = ("exp_avg", "exp_avg_sq")

    def __init__(self, groups: list[dict[str, Any]], params: Sequence[torch.Tensor]) -> None:
        self.mu_product = [1.0] * len(groups)
        super().__init__(groups, params)

    def keep(self, rows: torch.Tensor, positions: Sequence[int],
             params: Sequence[torch.Tensor]) -> None:
        self.mu_product = [self.mu_product[i] for i in positions]
        super().keep(rows, positions, params)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        t = self.t
        products = iter(range(len(self.groups)))  # _table calls values once per member, in order

        def values(g: dict[str, Any], lr: float) -> tuple[float, ...]:
            beta1, beta2 = g["betas"]
            mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * g["momentum_decay"])))
            mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * g["momentum_decay"])))
            k = next(products)
            # torch keeps the product in a float32 tensor: round it the same way.
            self.mu_product[k] = product = float(
                torch.tensor(self.mu_product[k], dtype=torch.float32) * mu)
            return (1 - beta1, beta2, 1 - beta2, (1 - beta2**t) ** 0.5, g["eps"],
                    -lr * (1.0 - mu) / (1.0 - product),
                    -lr * mu_next / (1.0 - product * mu_next))

        table = self._table(lrs, values)
        for i, p, g in self._pairs(grads):
            wd, decay, w1, beta2, w2, bc2_sqrt, eps, grad_step, avg_step = table.like(p)
            self._weight_decay(p, g, wd, decay)
            m, v = self._moments(i, g, w1, beta2, w2)
            denom = torch.sqrt(v, out=self.scratch[i]).div_(bc2_sqrt).add_(eps)
            p.addcmul_(g.div_(denom), grad_step)
            p.addcmul_(torch.div(m, denom, out=denom), avg_step)


class _RadamBatched(_Batched):
    """torch.optim.RAdam: per-member lr, betas, eps, weight decay (coupled or decoupled);
    the rectification switches on per member (it depends on beta2), as torch decides it."""

    states = ("exp_avg", "exp_avg_sq")

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        t = self.t

        def values(g: dict[str, Any], lr: float) -> tuple[float, ...]:
            beta1, beta2 = g["betas"]
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * t * (beta2**t) / (1 - beta2**t)
            rect = (((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rho_t > 5 else 0.0)
            bc1 = 1 - beta1**t
            # As torch's foreach RAdam: 1 / ((sqrt(v) + eps) / c) + u; with c = 0 (not
            # rectified yet) 1/inf = 0 leaves the plain momentum step u.
            return (1 - beta1, beta2, 1 - beta2, g["eps"],
                    ((1 - beta2**t) ** 0.5) * (lr * rect / bc1) * -1,
                    (lr * (0.0 if rect > 0 else 1.0) / bc1) * -1)

        table = self._table(lrs, values)
        for i, p, g in self._pairs(grads):
            wd, decay, w1, beta2, w2, eps, rect_step, plain_step = table.like(p)
            self._weight_decay(p, g, wd, decay)
            m, v = self._moments(i, g, w1, beta2, w2)
            s = torch.sqrt(v, out=self.scratch[i]).add_(eps)
            p.addcmul_(m, s.div_(rect_step).reciprocal_().add_(plain_step))


def _accumulator(groups: Sequence[dict[str, Any]], p: torch.Tensor) -> torch.Tensor:
    """Adagrad's starting sums: each member's initial_accumulator_value."""
    start = _Table([[float(g["initial_accumulator_value"]) for g in groups]]).like(p)[0]
    return torch.zeros_like(p, memory_format=torch.contiguous_format).add_(start)


class _Fused(_Update):
    """Each member calls torch's fused kernel for its family on its own slices of the stacks:
    one pass over memory per member, the arithmetic of ``fit``'s own optimizer."""

    def __init__(self, rule: str, groups: list[dict[str, Any]],
                 params: Sequence[torch.Tensor]) -> None:
        self.rule = rule
        self.states = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
                       "adagrad": ("sum",)}[rule]
        # One step count for every member and parameter: they all step together.
        self.step_t = torch.zeros((), dtype=torch.float32, device=params[0].device)
        super().__init__(groups, params)

    def _initial(self, name: str, p: torch.Tensor) -> torch.Tensor:
        if name == "sum":
            return _accumulator(self.groups, p)
        return super()._initial(name, p)

    def _refresh(self) -> None:
        self.members = [list(p.unbind(0)) for p in self.data]
        self.member_state = {name: [list(t.unbind(0)) for t in tensors]
                             for name, tensors in self.state.items()}

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        self.step_t += 1
        used = [i for i, g in enumerate(grads) if g is not None]
        # The kernels walk parameter, gradient and state as flat memory of one layout.
        slices = {i: _contiguous(grads[i]).unbind(0) for i in used}
        steps = [self.step_t] * len(used)
        for k, (group, lr) in enumerate(zip(self.groups, lrs, strict=True)):
            ps = [self.members[i][k] for i in used]
            gs = [slices[i][k] for i in used]
            st = {name: [self.member_state[name][i][k] for i in used] for name in self.states}
            if self.rule == "adam":
                kernel = (torch._fused_adamw_ if group["decoupled_weight_decay"]
                          else torch._fused_adam_)
                beta1, beta2 = group["betas"]
                kernel(ps, gs, st["exp_avg"], st["exp_avg_sq"], [], steps, lr=lr, beta1=beta1,
                       beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       amsgrad=False, maximize=False)
            elif self.rule == "sgd":
                momentum = group["momentum"]
                torch._fused_sgd_(ps, gs, st["momentum_buffer"] if momentum != 0 else [],
                                  weight_decay=group["weight_decay"], momentum=momentum, lr=lr,
                                  dampening=0.0, nesterov=group["nesterov"], maximize=False,
                                  is_first_step=self.t == 1 and momentum != 0)
            else:
                torch._fused_adagrad_(ps, gs, st["sum"], steps, lr=lr,
                                      lr_decay=group["lr_decay"],
                                      weight_decay=group["weight_decay"], eps=group["eps"],
                                      maximize=False)


def _contiguous(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None
    return t if t.is_contiguous() else t.contiguous()


_BATCHED: dict[str, Callable[[list[dict[str, Any]], Sequence[torch.Tensor]], _Update]] = {
    "sgd": _SgdBatched, "adam": _AdamBatched, "rmsprop": _RmspropBatched,
    "adagrad": _AdagradBatched, "nadam": _NadamBatched, "radam": _RadamBatched}


def _make_update(rule: str, groups: list[dict[str, Any]], params: Sequence[torch.Tensor],
                 *, update: str, device_type: str) -> _Update:
    # A forced "fused" falls back to the batched rule where torch has no kernel, as
    # optimizers.build falls back to foreach.
    if update != "batched" and rule in _FUSED_RULES and device_type in _FUSED_DEVICE_TYPES:
        return _Fused(rule, groups, params)
    return _BATCHED[rule](groups, params)


# -- training ----------------------------------------------------------------------------

def fit_population(
    task: Task,
    data: DeviceData,
    configs: Sequence[TrialConfig],
    *,
    device: str,
    seeds: Sequence[int],
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    forward: str = "auto",
    update: str = "auto",
) -> list[MemberResult]:
    """Train one member per config (member k with seed ``seeds[k]``) as one stacked model.

    Member k computes what ``fit(task, data, configs[k], device=device, seed=seeds[k])``
    computes, up to float re-association (see the module docstring; not dropout). After each
    validation, ``on_epoch(k, result)`` is called for every member still training, in
    order; if it raises an Exception (Optuna's TrialPruned), member k leaves, with what it
    raised as its `stopped` (a KeyboardInterrupt stops them all). A member whose loss stops
    being finite leaves with :class:`Diverged`. The others go on. Returns one
    :class:`MemberResult` per config, in order.

    Each :class:`EpochResult`'s `seconds` is the member's share: the epoch's wall time over
    the members that began it. `forward` ("auto", "vmap", "bmm") and `update` ("auto",
    "fused", "batched") choose the implementations (for measuring them); "auto" takes the
    faster. Raises :class:`CannotStack`, before training anything, when the configs cannot
    share a step or the model cannot be stacked (BatchNorm, data-dependent control flow …).
    """
    configs, seeds = list(configs), [int(s) for s in seeds]
    if not configs:
        raise ValueError("fit_population needs at least one config, but got none")
    if len(seeds) != len(configs):
        raise ValueError(f"fit_population needs one seed per config, but got {len(seeds)} "
                         f"seeds for {len(configs)} configs")
    for name, value, choices in (("forward", forward, FORWARDS), ("update", update, UPDATES)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, but got {value!r}")
    reason = _shared_step_reason(configs)
    if reason is not None:
        raise CannotStack(reason)
    groups = [_torch_group(c) for c in configs]
    rule = _RULES[FAMILIES[configs[0].optimizer].torch_class]
    dev = torch.device(device)
    models = [_build(task, config, seed, dev) for seed, config in zip(seeds, configs, strict=True)]
    reason = _check_models(task.loss, models, data.train_x, data.train_y, forward=forward)
    if reason is not None:
        raise CannotStack(reason)
    stack = _Stack(models, forward=forward, flat_input=data.train_x.dim() == 2)
    del models
    return _Population(task, data, configs, seeds, stack, groups, rule, dev,
                       update=update).run(on_epoch)


class _Population:
    """The training loop of fit_population; `alive` maps stack rows to member indices."""

    def __init__(self, task: Task, data: DeviceData, configs: list[TrialConfig],
                 seeds: list[int], stack: _Stack, groups: list[dict[str, Any]], rule: str,
                 dev: torch.device, *, update: str) -> None:
        self.task, self.data, self.stack, self.dev = task, data, stack, dev
        self.results = [MemberResult(k, c, s) for k, (c, s) in
                        enumerate(zip(configs, seeds, strict=True))]
        self.alive = list(range(len(configs)))
        first = configs[0]
        self.bs, self.epochs = first.batch_size, first.epochs
        self.n = len(data.train_x)
        self.steps_per_epoch = math.ceil(self.n / self.bs)
        self.update = _make_update(rule, groups, self._trainable(), update=update,
                                   device_type=dev.type)
        # One param group per member, so that torch's scheduler gives each member the lr its
        # own fit would see at every step (recursive schedules included).
        self.lr_holder = torch.optim.SGD(
            [{"params": [torch.zeros(0)], "lr": g["lr"]} for g in groups])
        self.schedule = optimizers.build_scheduler(
            first.scheduler, self.lr_holder, total_steps=self.steps_per_epoch * self.epochs)
        # Marks the holder stepped (torch warns of a schedule stepped before its optimizer);
        # its parameters have no gradients, so nothing changes.
        self.lr_holder.step()
        self.generators = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
        self.check_every = (_CPU_DIVERGENCE_CHECK if dev.type == "cpu"
                            else self.steps_per_epoch)
        sizes = torch.full((self.steps_per_epoch,), float(self.bs), device=dev)
        sizes[-1] = self.n - self.bs * (self.steps_per_epoch - 1)
        self.sizes = sizes.unsqueeze(1)
        self.perms = torch.empty(0)  # (K, n): each member's order this epoch
        self.done = torch.empty(0)  # (steps, K): this epoch's checked training losses

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.stack.params if p.requires_grad]

    def _lrs(self) -> list[float]:
        return [float(self.lr_holder.param_groups[k]["lr"]) for k in self.alive]

    def _leave(self, leaving: dict[int, Exception]) -> None:
        """Members (by index) leave with what stopped them; the stacks shrink."""
        if not leaving:
            return
        rows = [r for r, k in enumerate(self.alive) if k not in leaving]
        for k, exc in leaving.items():
            self.results[k].stopped = exc
        self.alive = [self.alive[r] for r in rows]
        self.generators = [self.generators[r] for r in rows]
        if not rows:
            return
        index = torch.tensor(rows, device=self.dev)
        self.stack.keep(index)
        self.update.keep(index, rows, self._trainable())
        self.perms = self.perms.index_select(0, index)
        self.done = self.done.index_select(1, index)

    def run(self, on_epoch: Callable[[int, EpochResult], None] | None) -> list[MemberResult]:
        data, bs, spe = self.data, self.bs, self.steps_per_epoch
        feature_shape, label_shape = data.train_x.shape[1:], data.train_y.shape[1:]
        for epoch in range(self.epochs):
            if not self.alive:
                break
            start = time.perf_counter()
            began = len(self.alive)
            lrs_at_start = dict(zip(self.alive, self._lrs(), strict=True))
            self.stack.train(True)
            self.perms = torch.stack([torch.randperm(self.n, device=self.dev, generator=g)
                                      for g in self.generators])
            self.done = torch.empty((0, began), device=self.dev)
            recent: list[torch.Tensor] = []
            checked = 0
            for step in range(spe):
                if not self.alive:
                    break
                k = len(self.alive)
                idx = self.perms[:, step * bs:(step + 1) * bs].reshape(-1)
                x = torch.index_select(data.train_x, 0, idx).view(k, -1, *feature_shape)
                y = torch.index_select(data.train_y, 0, idx).view(k, -1, *label_shape)
                losses = _member_losses(self.task.loss, self.stack.forward(x), y)
                grads = torch.autograd.grad(losses.sum(), self._trainable(), allow_unused=True)
                self.update.step(grads, self._lrs())
                if self.schedule is not None:
                    self.schedule.step()
                recent.append(losses.detach())
                if (step + 1) % self.check_every == 0 or step + 1 == spe:
                    self._check_finite(recent, checked, epoch)
                    recent, checked = [], step + 1
            if not self.alive:
                break
            train_losses = ((self.done.float() * self.sizes).sum(0) / self.n).tolist()
            val = self._evaluate()
            seconds = (time.perf_counter() - start) / began
            leaving: dict[int, Exception] = {}
            for k, train_loss, (val_loss, value) in zip(list(self.alive), train_losses, val,
                                                        strict=True):
                if not math.isfinite(val_loss):
                    leaving[k] = Diverged(step=(epoch + 1) * spe, epoch=epoch, loss=val_loss)
                    continue
                result = EpochResult(epoch, train_loss, val_loss, value, lrs_at_start[k],
                                     seconds)
                self.results[k].epochs.append(result)
                if on_epoch is not None:
                    try:
                        on_epoch(k, result)
                    except Exception as exc:  # the member's own stop (a pruner), as in fit
                        leaving[k] = exc
            self._leave(leaving)
        return self.results

    def _check_finite(self, recent: list[torch.Tensor], checked: int, epoch: int) -> None:
        """Members with a non-finite loss since the last check leave with Diverged at the
        first such step, as fit reports it (one host read for all members)."""
        chunk = torch.stack(recent)  # (steps, K)
        finite = torch.isfinite(chunk)
        self.done = torch.cat([self.done, chunk])
        if bool(finite.all()):
            return
        leaving: dict[int, Exception] = {}
        for row in (~finite.all(0)).nonzero().flatten().tolist():
            first = int((~finite[:, row]).nonzero()[0, 0])
            leaving[self.alive[row]] = Diverged(
                step=epoch * self.steps_per_epoch + checked + first, epoch=epoch,
                loss=float(chunk[first, row]))
        self._leave(leaving)

    @torch.inference_mode()
    def _evaluate(self) -> list[tuple[float, float]]:
        """(mean loss, metric) per member over the validation split, as loop.evaluate."""
        self.stack.train(False)
        x, y = self.data.val_x, self.data.val_y
        k = len(self.alive)
        chunk = max(1, _EVAL_CHUNK // k)  # the same activation memory as one fit's chunk
        loss_sums = torch.zeros(k, device=x.device)
        metric_sums = torch.zeros(k, device=x.device)
        count = 0
        for i in range(0, len(x), chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            out = self.stack.forward_shared(xb).float()
            n = 0
            for row in range(k):
                loss_sum, metric_sum, n = summed(self.task.loss, out[row], yb)
                loss_sums[row] += loss_sum
                metric_sums[row] += metric_sum
            count += n
        return [(loss / count, metric / count) for loss, metric in
                zip(loss_sums.tolist(), metric_sums.tolist(), strict=True)]
