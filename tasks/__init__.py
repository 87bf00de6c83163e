"""Built-in tasks and their data, and the task protocol a user's own task implements.

``from tasks import Task, TaskData`` is all a task file needs (see the README's "Tune your own
model"); importing it does not import torch.
"""

from tasks.base import Task
from tasks.data import TaskData

__all__ = ["Task", "TaskData"]
