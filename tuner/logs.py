"""Library log levels: Optuna's, MLflow's and alembic's INFO lines repeat what our display
shows, so every entry point (the CLI, a `--jobs` process, the MLflow tracker) quiets them the
same way, through this one function."""

from __future__ import annotations

import logging


def quiet_library_logs() -> None:
    """Show the libraries' warnings and errors only.

    Optuna configures its logger (at INFO) on first use, overriding a level set from outside,
    so it is told through its own API; MLflow resets its level when imported, so the tracker
    calls this again after importing it.
    """
    # Not at the top: the CLI imports this module at start-up, and `opttune --help` must load
    # no Optuna (tests/tuner/search/test_runner.py).
    import optuna  # noqa: PLC0415  (see above)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
