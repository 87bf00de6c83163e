"""Reading a study back: ``queries`` (studies, trials, best, compare) and the typed
``summaries`` they return, ``task_list``, ``export``, ``plots`` and ``figures`` (drawing
them), ``retrain`` (train the chosen config on train+validation, score the test split once),
``mlflow_ui`` and ``dashboard_server`` (the two UIs), ``deletion``, and a benchmark's record,
cells, report, profile and files (``benchmark_*``, ``paired``, ``tunability``, ``profile``).
"""
