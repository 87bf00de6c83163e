"""Running a study: ``runner`` (search, resume: the one code path), ``trial_loop`` (claim,
train, report, prune, log one trial after another), ``jobs`` (``--jobs``: one process per
running trial), ``worker`` (joining a study from any process or machine), ``sampling``
(samplers and pruners that model each optimizer family on its own trials), ``events`` (what
a running study tells whoever watches it) and ``signals`` (SIGTERM as Ctrl-C).
"""
