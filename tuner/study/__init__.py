"""Where a study lives and how it is kept whole.

``stores`` (the home folder, store URLs, opening the Optuna store), ``meta`` and ``settings``
(what a study stores about itself, typed), ``trial_attrs`` and ``trial_record`` (what it
stores on each trial, and a trial read back), ``records`` (the rules over its trials:
counted, best, re-queued, stale), ``direction`` (which way its objective goes), ``claims``
(the budget across processes: one lock per study, claims, heartbeats), ``recovery`` (what a
crash leaves, found and repaired), ``tracker`` (the one module that imports mlflow) and
``optuna_adapter`` (the one module that touches Optuna's private API).
"""
