"""Training a population: :func:`fit_population` checks the configs and the model, builds
the stack and the update, and runs the loop (:class:`_Population`): each member's data
order and learning-rate schedule, finiteness checks, validation, members leaving."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tasks.base import Task
from tasks.losses import summed
from tuner.space.config import TrialConfig
from tuner.space.families import FAMILIES
from tuner.training import optimizers
from tuner.training.loop import DeviceData, Diverged, EpochResult
from tuner.training.muon import split_params
from tuner.training.population._errors import CannotStack
from tuner.training.population._grouping import _RULES, _shared_step_reason, _torch_group
from tuner.training.population._mixed import make_update
from tuner.training.population._stack import _build, _check_models, _member_losses, _Stack
from tuner.training.population._updates import ParamGroup, num, subgroup

_CPU_DIVERGENCE_CHECK = 50  # steps between finiteness checks on CPU, as in loop.fit
_EVAL_CHUNK = 8192  # samples per validation chunk of one member, as in loop.fit
FORWARDS = ("auto", "vmap", "bmm")
UPDATES = ("auto", "fused", "batched")


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
    rules = [_RULES[FAMILIES[c.optimizer].torch_class] for c in configs]
    # Stack rows keep each update rule's members adjacent (each rule updates its own rows),
    # in the configs' order otherwise.
    first = {rule: i for i, rule in reversed(list(enumerate(rules)))}
    order = sorted(range(len(configs)), key=lambda k: first[rules[k]])
    dev = torch.device(device)
    models = [_build(task, configs[k], seeds[k], dev) for k in order]
    reason = _check_models(task.loss, models, data.train_x, data.train_y, forward=forward)
    if reason is not None:
        raise CannotStack(reason)
    stack = _Stack(models, forward=forward, flat_input=data.train_x.dim() == 2)
    del models
    return _Population(task, data, configs, seeds, stack, groups, rules, order, dev,
                       update=update).run(on_epoch)


class _Population:
    """The training loop of fit_population; `alive` maps stack rows to member indices."""

    def __init__(self, task: Task, data: DeviceData, configs: list[TrialConfig],
                 seeds: list[int], stack: _Stack, groups: Sequence[ParamGroup],
                 rules: list[str], order: list[int], dev: torch.device, *,
                 update: str) -> None:
        self.task, self.data, self.stack, self.dev = task, data, stack, dev
        self.results = [MemberResult(k, c, s) for k, (c, s) in
                        enumerate(zip(configs, seeds, strict=True))]
        self.alive = list(order)  # stack row r trains member order[r]
        first = configs[0]
        self.bs, self.epochs = first.batch_size, first.epochs
        self.n = len(data.train_x)
        self.steps_per_epoch = math.ceil(self.n / self.bs)
        # Muon's side: the model's hidden matrices (the same for every member), as fit's
        # optimizer splits them, among the parameters that train.
        matrices = {id(p) for p in split_params(stack.base)[0]}
        held = [(id(stack.base.get_parameter(name)) in matrices, transposed)
                for name, transposed, p in zip(stack.param_names, stack.transposed,
                                               stack.params, strict=True) if p.requires_grad]
        self.update = make_update([rules[k] for k in order], [groups[k] for k in order],
                                  self._trainable(), update=update, device_type=dev.type,
                                  hidden=[h for h, _ in held], transposed=[t for _, t in held])
        # One param group per param group of each member's own optimizer (one, or for muon
        # Muon's and AdamW's, or AdamW's alone where the model has no hidden matrix), so that
        # torch's scheduler gives each member the lrs its own fit would see at every step
        # (recursive schedules included); one holder and schedule per schedule kind.
        bases = [[num(groups[k], "lr")] if rules[k] != "muon" else
                 [num(groups[k], "lr")] * bool(matrices) + [num(subgroup(groups[k], "adamw"),
                                                                "lr")]
                 for k in range(len(configs))]
        self.lr_groups: list[list[ParamGroup]] = [[] for _ in configs]  # member → groups
        self.schedules: list[torch.optim.lr_scheduler.LRScheduler] = []
        for kind in dict.fromkeys(c.scheduler for c in configs):
            members = [k for k, c in enumerate(configs) if c.scheduler == kind]
            holder = torch.optim.SGD([{"params": [torch.zeros(0)], "lr": lr}
                                      for k in members for lr in bases[k]])
            schedule = optimizers.build_scheduler(
                kind, holder, total_steps=self.steps_per_epoch * self.epochs)
            # Marks the holder stepped (torch warns of a schedule stepped before its
            # optimizer); its parameters have no gradients, so nothing changes.
            holder.step()
            held_groups = iter(holder.param_groups)
            for k in members:
                self.lr_groups[k] = [next(held_groups) for _ in bases[k]]
            if schedule is not None:
                self.schedules.append(schedule)
        self.generators = [torch.Generator(device=dev).manual_seed(seeds[k]) for k in order]
        self.check_every = (_CPU_DIVERGENCE_CHECK if dev.type == "cpu"
                            else self.steps_per_epoch)
        sizes = torch.full((self.steps_per_epoch,), float(self.bs), device=dev)
        sizes[-1] = self.n - self.bs * (self.steps_per_epoch - 1)
        self.sizes = sizes.unsqueeze(1)
        self.perms = torch.empty(0)  # (K, n): each member's order this epoch
        self.done = torch.empty(0)  # (steps, K): this epoch's checked training losses

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.stack.params if p.requires_grad]

    def _lrs(self) -> list[list[float]]:
        """Each training member's learning rates, one per param group of its optimizer."""
        return [[float(num(g, "lr")) for g in self.lr_groups[k]] for k in self.alive]

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
            # fit reports its optimizer's first group's lr (Muon's, for muon)
            lrs_at_start = {k: lrs[0] for k, lrs in zip(self.alive, self._lrs(), strict=True)}
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
                self.update.step_members(grads, self._lrs())
                for schedule in self.schedules:
                    schedule.step()
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
