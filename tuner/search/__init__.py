"""Running a study: ``runner`` (search, resume: the one code path), ``trial_loop`` (claim and
train one trial after another), ``trial_steps`` (one trial: sample, report, prune, record),
``stacked_trials`` (``--population``: trials trained as one stacked model), ``mlflow_queue``
(a search's MLflow calls, on one thread), ``jobs`` (``--jobs``: one process per running
trial), ``worker`` (joining a study from any process or machine), ``sampling`` and
``pruning`` (each optimizer family modelled and judged on its own trials) and ``events``
(what a running study tells whoever watches it).
"""
