"""Muon's update (Jordan 2024) for all members at once, as ``torch.optim.Muon`` computes it
for one (torch/optim/_muon.py, ``_single_tensor_muon``), and the `muon` family's two sides
(:class:`tuner.training.muon.MuonWithAdamW`): Muon on the hidden weight matrices, AdamW on
the other parameters.

Per hidden matrix W of shape (A, B) (torch's (out, in)) and member, torch computes::

    buf = lerp(buf, g, 1 - momentum)
    u = lerp(g, buf, momentum) if nesterov else buf
    O = NS(u)                    # in bfloat16, on u transposed where A > B
    W *= 1 - lr * wd
    W -= lr * sqrt(max(1, A / B)) * O    # adjust_lr_fn "original" (or "match_rms_adamw")

NS, the Newton-Schulz quintic iteration: X = bf16(u) (transposed where A > B, so that X is
wide), X /= max(||X||_F, eps), then ``ns_steps`` times: G = X Xᵀ, X = a X + (b G + c G²) X.
The stacked form, :func:`zeropower_batched`, runs it on (K, m, n) stacks with ``bmm`` and
``baddbmm``, which compute the same sums per member in the same precision (bfloat16 operands,
float32 accumulation on a CPU and in cuBLAS) as torch's ``mm`` and ``addmm`` on each matrix.
The momentum, decay and step are element-wise, with per-member lr, momentum, weight decay,
Nesterov flag and lr adjustment as (K, 1, 1) tensors. No torch kernel fuses it, so it is
the rule on every device; the AdamW side is the adam rule (fused or batched) over the other
parameters, with each member's AdamW group, at its own learning rate (the second param
group of the member's optimizer, scheduled as ``fit`` schedules it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from tuner.training.population._batched import _Batched
from tuner.training.population._updates import (
    ParamGroup,
    _Table,
    _Update,
    flag,
    num,
    numbers,
    subgroup,
    word,
)

_T = TypeVar("_T")


def zeropower_batched(grad: torch.Tensor, ns_coefficients: tuple[float, float, float],
                      ns_steps: int, eps: float) -> torch.Tensor:
    """torch's ``_zeropower_via_newtonschulz`` on each of the K matrices of `grad` (K, m, n)
    at once: the Newton-Schulz orthogonalisation in bfloat16, on the transposes where
    m > n, as batched matrix products. Returns bfloat16 (K, m, n); a bfloat16 `grad` is
    overwritten (as torch's ``grad.bfloat16()`` of a bfloat16 input would be)."""
    if grad.dim() != 3:
        raise ValueError(f"zeropower_batched takes a (K, m, n) stack, but got shape "
                         f"{tuple(grad.shape)}")
    a, b, c = ns_coefficients
    x = grad.bfloat16()
    tall = grad.size(1) > grad.size(2)
    if tall:
        x = x.mT
    # torch: ortho_grad.div_(ortho_grad.norm().clamp(min=eps)), one norm per matrix
    x.div_(torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps))
    for _ in range(ns_steps):
        gram = torch.bmm(x, x.mT)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, gram_update, x, beta=a)
    return x.mT if tall else x


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, int]) -> float:
    """torch.optim._muon._adjust_lr: the lr of a matrix of `shape` (torch's (out, in))."""
    rows, cols = shape
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


class _MuonBatched(_Batched):
    """torch.optim.Muon over stacked (K, ...) hidden matrices: per-member lr, momentum,
    Nesterov flag, weight decay and lr adjustment; the Newton-Schulz settings shared (the
    family fixes them; _grouping refuses others). `transposed[i]`: parameter i is held as
    (K, in, out), the transpose of torch's (out, in) (the stack's baddbmm layout)."""

    states = ("momentum_buffer",)

    def __init__(self, groups: Sequence[ParamGroup], params: Sequence[torch.Tensor],
                 transposed: Sequence[bool]) -> None:
        if len(transposed) != len(params):
            raise ValueError(f"one transposed flag per matrix, but got {len(transposed)} for "
                             f"{len(params)}")
        if any(p.dim() != 3 for p in params):
            raise ValueError("Muon's stacked matrices are (K, m, n)")
        self.transposed = list(transposed)
        super().__init__(groups, params)

    def _refresh(self) -> None:
        super()._refresh()
        # Muon decays as AdamW does (p *= 1 - lr * wd): every member decays decoupled.
        self.coupled, self.decoupled = False, any(num(g, "weight_decay") != 0
                                                  for g in self.groups)
        nesterov = [flag(g, "nesterov") for g in self.groups]
        self.all_nesterov, self.any_nesterov = all(nesterov), any(nesterov)
        settings = {(numbers(g, "ns_coefficients"), int(num(g, "ns_steps")),
                     float(num(g, "eps"))) for g in self.groups}
        if len(settings) > 1:
            raise ValueError(f"members of one Muon rule share its Newton-Schulz settings, but "
                             f"got {sorted(settings)}")
        if settings:
            coefficients, self.ns_steps, self.eps = settings.pop()
            a, b, c = coefficients
            self.coefficients = (float(a), float(b), float(c))

    def _shape(self, i: int) -> tuple[int, int]:
        """Parameter i's matrix shape as torch holds it: (out, in)."""
        _, m, n = self.data[i].shape
        return (n, m) if self.transposed[i] else (m, n)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        columns = []
        for group, lr in zip(self.groups, lrs, strict=True):
            beta = num(group, "momentum")
            columns.append((1 - beta, beta, float(flag(group, "nesterov")),
                            1 - lr * num(group, "weight_decay"),
                            *(-_adjusted_lr(lr, word(group, "adjust_lr_fn"), self._shape(i))
                              for i in range(len(self.data)))))
        table = _Table([list(row) for row in zip(*columns, strict=True)])
        for i, p, g in self._pairs(grads):
            w, momentum, nesterov, decay, *steps = table.like(p)
            buf, s = self.state["momentum_buffer"][i], self.scratch[i]
            buf.lerp_(g, w)
            update = buf
            if self.all_nesterov:
                update = g.lerp_(buf, momentum)
            elif self.any_nesterov:
                update = torch.where(nesterov > 0.5, g.lerp_(buf, momentum), buf, out=s)
            ortho = self._orthogonalise(update, i)
            if self.decoupled:
                p.mul_(decay)
            # torch adds the bfloat16 update to the float32 parameter in float32: the same
            # values, copied (exactly) into the parameter's layout first.
            p.addcmul_(s.copy_(ortho), steps[i])

    def _orthogonalise(self, update: torch.Tensor, i: int) -> torch.Tensor:
        """NS of each member's matrix of `update` as torch holds it (a contiguous (out, in)
        bfloat16 copy, as torch's ``grad.bfloat16()``), returned in the stack's layout."""
        if self.transposed[i]:
            k, rows, cols = update.shape[0], *self._shape(i)
            held = torch.empty((k, rows, cols), dtype=torch.bfloat16, device=update.device)
            held.copy_(update.mT)
        else:
            held = update.to(torch.bfloat16, memory_format=torch.contiguous_format)
        ortho = zeropower_batched(held, self.coefficients, self.ns_steps, self.eps)
        return ortho.mT if self.transposed[i] else ortho


class _MuonWithAdamW(_Update):
    """The `muon` family's update: :class:`_MuonBatched` on the hidden matrices (`hidden`,
    one flag per parameter), the adam rule with each member's AdamW group on the others.
    Each member has two learning rates (its optimizer's two param groups, Muon's first),
    or one (AdamW's) where the model has no hidden matrix: :meth:`step_members`."""

    def __init__(self, groups: Sequence[ParamGroup], params: Sequence[torch.Tensor], *,
                 hidden: Sequence[bool], transposed: Sequence[bool],
                 make_adamw: Callable[[list[ParamGroup], list[torch.Tensor]], _Update]
                 ) -> None:
        # `make_adamw` builds the AdamW side (the adam rule, fused or batched): given by
        # _fused._make_update, which chooses between them, so that this module needs not
        # import it (it imports this one).
        if not len(hidden) == len(transposed) == len(params):
            raise ValueError(f"the muon rule needs a hidden and a transposed flag per "
                             f"parameter, but got {len(hidden)} and {len(transposed)} for "
                             f"{len(params)} parameters")
        # No state of its own (super().__init__ would make some): the sides hold it.
        self.groups, self.hidden = list(groups), list(hidden)
        self.data = [p.detach() for p in params]
        matrices, rest = self._split(self.data)
        self.muon = (_MuonBatched(groups, matrices, [t for t, h in zip(transposed, hidden,
                                                                        strict=True) if h])
                     if matrices else None)
        self.adamw = make_adamw([subgroup(g, "adamw") for g in groups], rest) if rest else None

    def _split(self, items: Sequence[_T]) -> tuple[list[_T], list[_T]]:
        return ([x for x, h in zip(items, self.hidden, strict=True) if h],
                [x for x, h in zip(items, self.hidden, strict=True) if not h])

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        raise TypeError("a muon member has a learning rate per side: call step_members")

    def step_members(self, grads: Sequence[torch.Tensor | None],
                     lrs: Sequence[Sequence[float]]) -> None:
        matrices, rest = self._split(grads)
        if self.muon is not None:
            self.muon.step(matrices, [member[0] for member in lrs])
        if self.adamw is not None:  # AdamW's group is the optimizer's last
            self.adamw.step(rest, [member[-1] for member in lrs])

    def keep(self, rows: torch.Tensor, positions: Sequence[int],
             params: Sequence[torch.Tensor]) -> None:
        self.groups = [self.groups[i] for i in positions]
        self.data = [p.detach() for p in params]
        matrices, rest = self._split(self.data)
        if self.muon is not None:
            self.muon.keep(rows, positions, matrices)
        if self.adamw is not None:
            self.adamw.keep(rows, positions, rest)
