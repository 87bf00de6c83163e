"""Where a study lives and how it is kept whole.

``stores`` (the home folder, store URLs, opening the Optuna store), ``records`` (the study's
stored metadata and the rules over its trials: counted, best, re-queued), ``claims`` (the
budget across processes: one lock per study, claims, heartbeats), ``recovery`` (what a crash
leaves, found and repaired), ``tracker`` (the one module that imports mlflow) and
``optuna_adapter`` (the one module that touches Optuna's private API).
"""
