"""The `muon` family's two sides: torch.optim.Muon on a model's hidden weight matrices, AdamW
on everything else, as one optimizer (one schedule, one ``step``).

Muon is "an optimizer for the hidden weights of a neural network. Other parameters, such as
embeddings, classifier heads, and hidden gains/biases should be optimized using standard
AdamW" (Keller Jordan, github.com/KellerJordan/Muon). The rule, :func:`split_params`, in
one place:

* the model's *weights* are its parameters of two or more dimensions that are not an
  embedding's table (``nn.Embedding``, ``nn.EmbeddingBag``), in the order the model
  registers them (for a ``Sequential``, the order data flows through it);
* the first weight is the input layer's and the last the output layer's: both go to AdamW;
* every other weight of exactly two dimensions goes to Muon. A convolution's filters (4-D)
  go to AdamW: torch's Muon takes 2-D parameters only (the Muon authors flatten them; torch
  does not);
* everything else (biases, normalisation gains, embeddings) goes to AdamW.

A model with fewer than three weights (a logistic regression, an MLP with one hidden layer)
has no hidden matrix: its `muon` trials train with the AdamW side alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import overload

import torch

_EMBEDDINGS = (torch.nn.Embedding, torch.nn.EmbeddingBag)


def split_params(model: torch.nn.Module | Iterable[torch.nn.Parameter]
                 ) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(the parameters Muon updates, the parameters AdamW updates), each in the model's
    order; see the module docstring for the rule. Plain parameters (no module) have no
    embeddings to tell apart."""
    if isinstance(model, torch.nn.Module):
        tables = {id(m.weight) for m in model.modules() if isinstance(m, _EMBEDDINGS)}
        params = list(model.parameters())
    else:
        tables, params = set(), list(model)
    weights = [p for p in params if p.dim() >= 2 and id(p) not in tables]
    hidden = {id(p) for p in weights[1:-1] if p.dim() == 2}
    return ([p for p in params if id(p) in hidden],
            [p for p in params if id(p) not in hidden])


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon and AdamW over disjoint parameters as one optimizer: its param groups are theirs
    (the same dicts, so a schedule moves both learning rates), ``step`` steps both. Either
    may be None (a model without hidden matrices has no Muon side)."""

    def __init__(self, muon: torch.optim.Optimizer | None,
                 adamw: torch.optim.Optimizer | None) -> None:
        self.parts = [part for part in (muon, adamw) if part is not None]
        if not self.parts:
            raise ValueError("MuonWithAdamW needs Muon or AdamW, but got neither")
        super().__init__([g for part in self.parts for g in part.param_groups], {})

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss
