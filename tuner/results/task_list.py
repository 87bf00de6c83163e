"""`opttune tasks`: every task there is, summarised. Apart from tuner.results.queries, which
reads studies, so that listing the tasks loads no study store (Optuna, SQLAlchemy).
"""

from __future__ import annotations

from tasks import registry
from tuner.results.summaries import TaskSummary


def list_tasks() -> list[TaskSummary]:
    """Every task there is (built in, then plugins), with its model's parameter count."""
    return [TaskSummary(name=t.name, ref=t.ref, summary=t.summary, data=t.data, model=t.model,
                        parameters=t.parameter_count(), hyperparams=dict(t.hyperparams),
                        metric=t.metric, direction=t.direction) for t in registry.list_tasks()]
