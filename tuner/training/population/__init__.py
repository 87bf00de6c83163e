"""Population training: K trials of one model trained at once, as one stacked model.

One job: train K same-shaped trials (same task params, batch size, epochs and update rule;
their own optimizer hyperparameters, schedules and seeds) as one model whose parameters
carry a leading member dimension (HFTA, Wang et al. MLSys 2021), so that K small matmuls
become one batched matmul and the per-step Python overhead is paid once, not K times. Each
member computes what :func:`tuner.training.loop.fit` computes for the same trial alone, up
to float re-association: it is built under its own seed exactly as ``fit`` builds it, draws
its own data order from its own generator exactly as ``fit`` does, follows the same torch
learning-rate schedule (a torch scheduler per schedule kind, over one param group per
member of that kind), and takes
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
  :func:`tuner.training.optimizers.build_scheduler` (one per schedule kind among the
  members) over one param group per member, so schedules are torch's own, recursion and
  rounding included, and members of one population may follow different schedules.
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

Muon (the `muon` family) has a batched rule of its own: each member's hidden weight matrices
stacked as (K, m, n) are orthogonalised together by the Newton-Schulz iteration in bfloat16
batched matrix products (``bmm``/``baddbmm``), on each matrix as torch holds it (out, in)
whatever the stack's layout; the member's momentum, decay and lr adjustment are (K, 1, 1)
tensors, and its AdamW side (the other parameters) is the adam rule with each member's AdamW
group at that group's own scheduled learning rate.

Modules: ``_grouping`` (which configs can share a step), ``_stack`` (the stacked model
and the check that a model can be stacked), ``_updates`` (per-member optimizer state)
with ``_batched`` (batched update rules), ``_lion`` and ``_muon`` (the recent families'),
and ``_fused`` (torch's fused kernels per member, and the choice between them), ``_mixed``
(rules side by side in one population), ``_fit`` (:func:`fit_population`, the training
loop), ``_errors`` (:class:`CannotStack`).
"""

from __future__ import annotations

from tuner.training.population._errors import CannotStack
from tuner.training.population._fit import FORWARDS, UPDATES, MemberResult, fit_population
from tuner.training.population._grouping import Grouping, group_configs
from tuner.training.population._stack import _Stack as _Stack  # for the tests
from tuner.training.population._stack import stack_check, stacked_forward

__all__ = ["FORWARDS", "UPDATES", "CannotStack", "Grouping", "MemberResult",
           "fit_population", "group_configs", "stack_check", "stacked_forward"]
