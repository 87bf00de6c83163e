"""Finding tasks: built-in names, ``module:attr``, ``path/to/file.py:attr`` and entry points."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path

from tasks.base import Task
from tuner.errors import TaskError

ENTRY_POINT_GROUP = "opttune.tasks"


def builtin_tasks() -> dict[str, Task]:
    from tasks.images import FASHION_MNIST_MLP, MNIST_LOGREG, MNIST_MLP

    return {t.name: t for t in (MNIST_MLP, FASHION_MNIST_MLP, MNIST_LOGREG)}


def plugin_tasks() -> dict[str, str]:
    """Entry-point tasks: name → "module:attr" (not loaded)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_tasks() -> list[Task]:
    tasks = list(builtin_tasks().values())
    for name in plugin_tasks():
        try:
            tasks.append(get_task(name))
        except TaskError:
            continue  # a broken plug-in must not hide the others from the list
    return tasks


def known_names() -> list[str]:
    return [*builtin_tasks(), *plugin_tasks()]


def get_task(ref: str) -> Task:
    """Resolve a task reference to a :class:`Task`, or raise :class:`TaskError`."""
    builtins = builtin_tasks()
    if ref in builtins:
        return builtins[ref]
    plugins = plugin_tasks()
    if ref in plugins:
        return replace(_load_attr(plugins[ref], ref), ref=ref)
    if ":" in ref:
        return replace(_load_attr(ref, ref), ref=_canonical(ref))
    close = difflib.get_close_matches(ref, known_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise TaskError(f"unknown task {ref!r}; {hint}known tasks: {', '.join(known_names())} "
                    f"(or give module:attr or path/to/file.py:attr)")


def _canonical(ref: str) -> str:
    """A file path is stored absolute, so that resume works from another directory."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def _load_attr(ref: str, shown: str) -> Task:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise TaskError(f"task {shown!r} must look like module:attr or file.py:attr")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise TaskError(f"task file {path} does not exist")
        name = f"opttune_user_task_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TaskError(f"cannot import task file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise TaskError(f"importing task file {path} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise TaskError(f"cannot import task module {target!r} (from {shown!r}): "
                            f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        raise TaskError(f"{target} has no attribute {attr!r} (from task {shown!r})")
    obj = getattr(module, attr)
    if callable(obj) and not isinstance(obj, Task):
        try:
            obj = obj()
        except Exception as exc:
            raise TaskError(f"calling {shown} to make the task failed: "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, Task):
        raise TaskError(f"{shown} is a {type(obj).__name__}, not a tasks.Task; see the "
                        f"README's 'Tune your own model'")
    return obj
