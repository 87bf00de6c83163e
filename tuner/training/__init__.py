"""Training one trial: the loop (``loop``), the optimizers and schedules (``optimizers``), the
device (``devices``) and a trial's seed (``seeds``).

Importing the package imports nothing heavy; ``loop`` and ``optimizers`` import torch.
"""
