"""opttune: tune the optimizer of a PyTorch model with Optuna, logged to MLflow.

The Python API does what the CLI does, on the same code path::

    import tuner
    result = tuner.search(task="mnist-mlp", study="s1", n_trials=4, epochs=2, seed=1)
    print(result.best)

Attributes are imported lazily so that `import tuner` (and `opttune --help`) stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from tuner._version import __version__

if TYPE_CHECKING:
    from tuner.search.session import SearchResult

__all__ = ["search", "resume", "__version__"]


def __getattr__(name: str) -> Callable[..., SearchResult] | ModuleType:
    # On first use: the runner loads Optuna, which `import tuner` must not. `tuner.search` is
    # the package tuner/search, which calling runs a search (see its __init__): once imported,
    # Python binds the name to the package, so the package itself must be what is called.
    if name == "search":
        from tuner import search  # noqa: PLC0415  (lazy public API)

        return search
    if name == "resume":
        from tuner.search import runner  # noqa: PLC0415  (lazy public API)

        return runner.resume
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
