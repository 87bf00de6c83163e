"""Running a study: ``runner`` (search, resume: the one code path), ``trial_loop`` (claim and
train one trial after another), ``trial_steps`` (one trial: sample, report, prune, record),
``stacked_trials`` (``--population``: trials trained as one stacked model), ``mlflow_queue``
(a search's MLflow calls, on one thread), ``jobs`` (``--jobs``: one process per running
trial), ``worker`` (joining a study from any process or machine), ``sampling`` and
``pruning`` (each optimizer family modelled and judged on its own trials) and ``events``
(what a running study tells whoever watches it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.search.session import SearchResult


class _CallablePackage(ModuleType):
    """``tuner.search`` is both this package and the Python API's search: once anything has
    imported the package, Python binds ``tuner.search`` to it, so calling it must search."""

    def __call__(self, **options: object) -> SearchResult:
        from tuner.search import runner  # noqa: PLC0415  (Optuna: only when called)

        search: Callable[..., SearchResult] = runner.search  # it checks each option
        return search(**options)


sys.modules[__name__].__class__ = _CallablePackage
