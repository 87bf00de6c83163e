"""opttune: tune the optimizer of a PyTorch model with Optuna, logged to MLflow.

The Python API does what the CLI does, on the same code path::

    import tuner
    result = tuner.search(task="mnist-mlp", study="s1", n_trials=4, epochs=2, seed=1)
    print(result.best)

Attributes are imported lazily so that `import tuner` (and `opttune --help`) stays instant.
"""

from __future__ import annotations

from typing import Any

from tuner._version import __version__

__all__ = ["search", "resume", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("search", "resume"):
        from tuner.search import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
