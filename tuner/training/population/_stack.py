"""The stacked model: K members' parameters on a leading dimension and their forward
(vmap of functional_call, or baddbmm for a plain MLP), the per-member losses, and the
check that a task's model can be stacked at all (:func:`stack_check`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import functional_call, vmap

from tasks.base import Task
from tuner.space.config import TrialConfig
from tuner.training.devices import is_out_of_memory
from tuner.training.loop import DeviceData
from tuner.training.population._errors import CannotStack, _first_line


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
        # Which parameters are held as the transpose of the member's own (Muon's rule acts on
        # each matrix as torch holds it).
        self.transposed = [False] * len(self.params)
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
                    self.transposed[w] = True
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
        if is_out_of_memory(exc):  # K members do not fit: not a fault of the model
            raise
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
        if is_out_of_memory(exc):  # K members do not fit: not a fault of the model
            raise
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


def stacked_forward(task: Task, data: DeviceData, config: TrialConfig, *, device: str) -> str:
    """How fit_population's "auto" would run `task`'s model: "bmm" (a plain Linear/ReLU MLP
    on flat inputs, as batched matrix products) or "vmap" (any other model)."""
    with torch.random.fork_rng(devices=[]):
        model = _build(task, config, 0, torch.device(device))
    return "bmm" if data.train_x.dim() == 2 and _plain_mlp(model) else "vmap"
