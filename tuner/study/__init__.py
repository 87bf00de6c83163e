"""Where a study lives and how it is kept whole.

``stores`` (the home folder, store URLs, opening the Optuna store; ``store_template`` makes
new stores fast), ``meta`` and ``settings`` (what a study stores about itself, typed),
``names`` (study names and their folders), ``trial_attrs`` and ``trial_record`` (what it
stores on each trial, and a trial read back), ``studies`` (loading and creating studies, and
the rules over their trials: counted, best, re-queued, stale, owned), ``direction`` (which way
its objective goes), ``space_conflicts`` (a changed space that Optuna would refuse),
``claims`` (the budget across processes: one lock per study, claims, heartbeats),
``recovery`` (what a crash leaves, found and repaired), ``tracker`` (the one module that
imports mlflow; ``tracker_process`` runs it in a process of its own) and ``optuna_adapter``
(the one module that touches Optuna's private API).
"""
