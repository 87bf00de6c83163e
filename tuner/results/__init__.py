"""Reading a study back: ``queries`` (studies, trials, best, compare), ``records`` (the typed
rows they return), ``export``, ``plots``, ``retrain`` (train the chosen config on
train+validation, score the test split once), ``ui`` (the MLflow UI) and ``delete``.
"""
