"""The batched update rules: one family's torch update for all members at once, as tensor
ops over the stacks with per-member hyperparameters as (K, 1, ...) tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tuner.training.population._updates import (
    ParamGroup,
    _accumulator,
    _Table,
    _Update,
    betas,
    flag,
    num,
)


class _Batched(_Update):
    """Batched tensor ops over the stacks, hyperparameters as (K, 1, …) tensors, in place on
    preallocated scratch tensors (a temporary of the whole stack per op costs more than the
    op: see the module docstring)."""

    def _refresh(self) -> None:
        self.scratch = [torch.empty_like(p) for p in self.data]
        decays = [(num(g, "weight_decay") != 0,
                   flag(g, "decoupled_weight_decay", default=False)) for g in self.groups]
        self.coupled = any(wd and not decoupled for wd, decoupled in decays)
        self.decoupled = any(wd and decoupled for wd, decoupled in decays)

    def _table(self, lrs: Sequence[float],
               values: Callable[[ParamGroup, float], Sequence[float]]) -> _Table:
        """Rows: the coupled weight decay, the decoupled decay factor, then `values`'s."""
        columns = []
        for group, lr in zip(self.groups, lrs, strict=True):
            wd = num(group, "weight_decay")
            decoupled = flag(group, "decoupled_weight_decay", default=False)
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
        self.any_momentum = any(num(g, "momentum") != 0 for g in self.groups)
        nesterov = [flag(g, "nesterov") for g in self.groups]
        self.all_nesterov, self.any_nesterov = all(nesterov), any(nesterov)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        table = self._table(lrs, lambda g, lr: (-lr, num(g, "momentum"),
                                                float(flag(g, "nesterov"))))
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

        def values(g: ParamGroup, lr: float) -> tuple[float, ...]:
            beta1, beta2 = betas(g)
            return (1 - beta1, beta2, 1 - beta2, (1 - beta2**t) ** 0.5, num(g, "eps"),
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
        self.any_momentum = any(num(g, "momentum") > 0 for g in self.groups)

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        table = self._table(lrs, lambda g, lr: (num(g, "alpha"), 1 - num(g, "alpha"),
                                                num(g, "eps"), num(g, "momentum"), -lr))
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
        table = self._table(lrs, lambda g, lr: (num(g, "eps"),
                                                -lr / (1 + (t - 1) * num(g, "lr_decay"))))
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

    def __init__(self, groups: Sequence[ParamGroup], params: Sequence[torch.Tensor]) -> None:
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

        def values(g: ParamGroup, lr: float) -> tuple[float, ...]:
            beta1, beta2 = betas(g)
            mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * num(g, "momentum_decay"))))
            mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * num(g, "momentum_decay"))))
            k = next(products)
            # torch keeps the product in a float32 tensor: round it the same way.
            self.mu_product[k] = product = float(
                torch.tensor(self.mu_product[k], dtype=torch.float32) * mu)
            return (1 - beta1, beta2, 1 - beta2, (1 - beta2**t) ** 0.5, num(g, "eps"),
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

        def values(g: ParamGroup, lr: float) -> tuple[float, ...]:
            beta1, beta2 = betas(g)
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * t * (beta2**t) / (1 - beta2**t)
            rect = (((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rho_t > 5 else 0.0)
            bc1 = 1 - beta1**t
            # As torch's foreach RAdam: 1 / ((sqrt(v) + eps) / c) + u; with c = 0 (not
            # rectified yet) 1/inf = 0 leaves the plain momentum step u.
            return (1 - beta1, beta2, 1 - beta2, num(g, "eps"),
                    ((1 - beta2**t) ** 0.5) * (lr * rect / bc1) * -1,
                    (lr * (0.0 if rect > 0 else 1.0) / bc1) * -1)

        table = self._table(lrs, values)
        for i, p, g in self._pairs(grads):
            wd, decay, w1, beta2, w2, eps, rect_step, plain_step = table.like(p)
            self._weight_decay(p, g, wd, decay)
            m, v = self._moments(i, g, w1, beta2, w2)
            s = torch.sqrt(v, out=self.scratch[i]).add_(eps)
            p.addcmul_(m, s.div_(rect_step).reciprocal_().add_(plain_step))



_BATCHED: dict[str, Callable[[Sequence[ParamGroup], Sequence[torch.Tensor]], _Update]] = {
    "sgd": _SgdBatched, "adam": _AdamBatched, "rmsprop": _RmspropBatched,
    "adagrad": _AdagradBatched, "nadam": _NadamBatched, "radam": _RadamBatched}
