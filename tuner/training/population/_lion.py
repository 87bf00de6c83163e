"""Lion's update (Chen et al. 2023) for all members at once, as the authors' code (and
lion-pytorch, which ``fit`` runs) computes it for one:

    p *= 1 - lr * wd
    p -= lr * sign(beta1 * m + (1 - beta1) * g)
    m = beta2 * m + (1 - beta2) * g

Element-wise but for the sign, so its batched form over stacked (K, ...) members is exact:
per-member lr, betas and weight decay as (K, 1, ...) tensors. No torch kernel fuses it,
so it is the rule on every device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tuner.training.population._batched import _Batched
from tuner.training.population._updates import _Table, betas, num


class _LionBatched(_Batched):
    """lion_pytorch.Lion (decoupled_weight_decay False: the paper's p *= 1 - lr * wd):
    per-member lr, betas and weight decay."""

    states = ("exp_avg",)

    def _refresh(self) -> None:
        super()._refresh()
        # Lion's decay multiplies by 1 - lr * wd, as AdamW's: every member decays decoupled.
        self.coupled, self.decoupled = False, any(num(g, "weight_decay") != 0
                                                  for g in self.groups)

    def _table_rows(self, lrs: Sequence[float]) -> list[list[float]]:
        columns = []
        for group, lr in zip(self.groups, lrs, strict=True):
            beta1, beta2 = betas(group)
            columns.append((1.0 - lr * num(group, "weight_decay"), beta1, 1.0 - beta1, beta2,
                            1.0 - beta2, -lr))
        return [list(row) for row in zip(*columns, strict=True)]

    def step(self, grads: Sequence[torch.Tensor | None], lrs: Sequence[float]) -> None:
        self.t += 1
        table = _Table(self._table_rows(lrs))
        for i, p, g in self._pairs(grads):
            decay, beta1, w1, beta2, w2, neg_lr = table.like(p)
            if self.decoupled:
                p.mul_(decay)
            m, s = self.state["exp_avg"][i], self.scratch[i]
            # exp_avg.clone().mul_(beta1).add(grad, alpha=1 - beta1).sgn_()
            update = torch.mul(m, beta1, out=s).addcmul_(g, w1).sgn_()
            p.addcmul_(update, neg_lr)
            m.mul_(beta2).addcmul_(g, w2)

