"""The `muon` family's one rule: torch's Muon on the hidden 2-D weight matrices, AdamW on the
rest (biases, norms, embeddings, the input and output layers, convolution filters), on every
built-in model, on a user task's model and on a model with an embedding and a norm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tasks.registry import builtin_tasks, get_task
from tuner.space.config import TrialConfig
from tuner.space.searchspace import parse_task_params, task_param_values
from tuner.training import optimizers
from tuner.training.muon import MuonWithAdamW, split_params

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "my_task.py"
MUON = {"lr": 0.02, "momentum": 0.95, "weight_decay": 0.01, "adam_lr": 3e-4}


def model_of(task_ref: str) -> nn.Module:
    task = get_task(task_ref)
    return task.build_model(task_param_values(parse_task_params(task.param_specs({}))))


def names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in ids]


# What goes to Muon on each built-in model: the weight matrices between the first and the
# last layer. A logistic regression and a one-hidden-layer MLP have none; the CNN's hidden
# layer is a convolution (4-D filters, which torch's Muon does not take).
BUILTIN = {"mnist-mlp": ["2.weight"], "fashion-mnist-mlp": ["2.weight"], "mnist-logreg": [],
           "fashion-mnist-cnn": [], "digits-mlp": [], "diabetes-mlp": ["3.weight"]}


def test_the_rule_covers_every_builtin_task() -> None:
    assert set(BUILTIN) == set(builtin_tasks())


@pytest.mark.parametrize("task", list(BUILTIN))
def test_hidden_matrices_of_the_builtin_models(task: str) -> None:
    model = model_of(task)
    hidden, rest = split_params(model)
    assert names(model, hidden) == BUILTIN[task]
    assert len(hidden) + len(rest) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in hidden)


def test_a_user_tasks_model() -> None:
    model = model_of(f"{EXAMPLE}:task")  # 2-hidden-hidden-2 with dropout
    hidden, rest = split_params(model)
    assert names(model, hidden) == ["3.weight"]
    assert names(model, rest) == ["0.weight", "0.bias", "3.bias", "6.weight", "6.bias"]


class Tagger(nn.Module):
    """Embedding, two hidden matrices, a LayerNorm, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.proj = nn.Linear(16, 32)
        self.body = nn.Linear(32, 32, bias=False)
        self.norm = nn.LayerNorm(32)
        self.mix = nn.Linear(32, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.norm(self.body(self.proj(self.embed(x)).relu()))))


def test_embeddings_and_norms_go_to_adamw() -> None:
    model = Tagger()
    hidden, rest = split_params(model)
    # the embedding is no layer of the rule: proj is the input layer, head the output layer
    assert names(model, hidden) == ["body.weight", "mix.weight"]
    assert "embed.weight" in names(model, rest) and "norm.weight" in names(model, rest)


def test_the_optimizer_steps_both_sides_with_one_schedule() -> None:
    model = model_of("mnist-mlp")
    config = TrialConfig("muon", MUON, batch_size=32, epochs=1, scheduler="cosine")
    opt = optimizers.build(config, model)
    assert isinstance(opt, MuonWithAdamW)
    muon, adamw = opt.parts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 3e-4]
    assert adamw.param_groups[0]["betas"] == (0.9, 0.95)
    assert adamw.param_groups[0]["eps"] == 1e-10
    assert {g["weight_decay"] for g in opt.param_groups} == {0.01}
    schedule = optimizers.build_scheduler("cosine", opt, total_steps=4)
    assert schedule is not None
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 784)).sum().backward()
    opt.step()
    schedule.step()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    # a schedule moves both sides, each from its own base learning rate
    assert [g["lr"] for g in muon.param_groups + adamw.param_groups] == pytest.approx(
        [0.02 * 0.5 * (1 + 0.7071067811865476), 3e-4 * 0.5 * (1 + 0.7071067811865476)])


def test_a_model_without_hidden_matrices_trains_with_the_adamw_side_alone() -> None:
    opt = optimizers.build(TrialConfig("muon", MUON, 32, 1), model_of("mnist-logreg"))
    assert isinstance(opt, MuonWithAdamW)
    assert [type(part) for part in opt.parts] == [torch.optim.AdamW]
