"""The fused updates: each member runs torch's fused kernel for its family on its own
slices of the stacks; and :func:`_make_update`, which takes them where torch has a
kernel and the batched rules elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tuner.training.population._batched import _BATCHED
from tuner.training.population._updates import _accumulator, _Update

# Rules with a torch fused kernel, on these device types (as tuner.training.optimizers uses).
_FUSED_RULES = frozenset({"sgd", "adam", "adagrad"})
_FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})


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


def _make_update(rule: str, groups: list[dict[str, Any]], params: Sequence[torch.Tensor],
                 *, update: str, device_type: str) -> _Update:
    # A forced "fused" falls back to the batched rule where torch has no kernel, as
    # optimizers.build falls back to foreach.
    if update != "batched" and rule in _FUSED_RULES and device_type in _FUSED_DEVICE_TYPES:
        return _Fused(rule, groups, params)
    return _BATCHED[rule](groups, params)
