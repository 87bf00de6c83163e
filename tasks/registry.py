"""Finding tasks: built-in names, ``module:attr``, ``path/to/file.py:attr`` and entry points.

A task's `ref` is how a study finds it again on `resume`: the built-in or entry-point name,
the ``module:attr`` as given, or the file's absolute path (so that resume works from any
directory).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from tasks import cnn, digits, images, tabular
from tasks.base import Task
from tuner.errors import TaskError

ENTRY_POINT_GROUP = "opttune.tasks"
_HELP = "see the README's 'Tune your own model'"


def builtin_tasks() -> dict[str, Task]:
    return {t.name: t for t in (images.MNIST_MLP, images.FASHION_MNIST_MLP, images.MNIST_LOGREG,
                                cnn.FASHION_MNIST_CNN, digits.DIGITS_MLP, tabular.DIABETES_MLP)}


def plugin_tasks() -> dict[str, str]:
    """Entry-point tasks: name → "module:attr" (not loaded)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_tasks() -> list[Task]:
    tasks = list(builtin_tasks().values())
    for name in plugin_tasks():
        if name in builtin_tasks():
            continue
        try:
            tasks.append(get_task(name))
        except TaskError:
            continue  # a broken plug-in must not hide the others from the list
    return tasks


def known_names() -> list[str]:
    return list(dict.fromkeys([*builtin_tasks(), *plugin_tasks()]))


def get_task(ref: str) -> Task:
    """Resolve a task reference to a :class:`Task` (with its `ref` set), or raise TaskError."""
    builtins = builtin_tasks()
    if ref in builtins:
        return builtins[ref]
    plugins = plugin_tasks()
    if ref in plugins:
        return replace(_load_attr(plugins[ref], f"entry point {ref!r} ({plugins[ref]})"),
                       ref=ref)
    if ":" in ref:
        return replace(_load_attr(ref, ref), ref=_canonical(ref))
    if ref.endswith(".py"):
        raise TaskError(f"task {ref!r} names a file but not the Task in it; add its name, "
                        f"e.g. --task {ref}:task")
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
        raise TaskError(f"task {shown!r} must look like module:attr or path/to/file.py:attr")
    module = _import_file(target) if target.endswith(".py") else _import_module(target, shown)
    if not hasattr(module, attr):
        found = [name for name, value in vars(module).items() if isinstance(value, Task)]
        hint = f"; its tasks: {', '.join(found)}" if found else \
            f"; it defines no tasks.Task ({_HELP})"
        raise TaskError(f"{target} has no attribute {attr!r} (from task {shown!r}){hint}")
    obj = getattr(module, attr)
    if inspect.isfunction(obj):  # a factory: `def task() -> Task`
        try:
            obj = obj()
        except Exception as exc:
            raise TaskError(f"calling {attr}() in {target} to make the task failed: "
                            f"{type(exc).__name__}: {exc}") from None
        if not isinstance(obj, Task):
            raise TaskError(f"{attr}() in {target} returned a value of type "
                            f"{type(obj).__name__}, not a tasks.Task; {_HELP}")
    if not isinstance(obj, Task):
        kind = f"class {obj.__name__}" if inspect.isclass(obj) else f"{type(obj).__name__}"
        raise TaskError(f"{attr} in {target} is a {kind}, not a tasks.Task: wrap the model "
                        f"factory and data in Task(name=…, load_data=…, build_model=…); {_HELP}")
    return obj


def _import_file(target: str) -> ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        relative = "" if Path(target).is_absolute() else f" ({target!r} from {Path.cwd()})"
        raise TaskError(f"task file {path} does not exist{relative}")
    # One stable module name per file, so that loading it twice reuses the first import.
    name = "opttune_task_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot import task file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # The file's folder goes on the path, so that it can import its neighbours.
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise
        where = _where(exc, path)
        raise TaskError(f"importing task file {path} failed{where}: "
                        f"{type(exc).__name__}: {_first_line(exc)}") from None
    return module


def _import_module(target: str, shown: str) -> ModuleType:
    # Like `python -m`, look in the current directory too (after installed packages).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise TaskError(f"cannot import task module {target!r} (from {shown!r}): no module "
                            f"named {exc.name!r}; install its package, run opttune from the "
                            f"folder that holds it, or give a file: path/to/file.py:attr") \
                from None
        raise TaskError(f"importing task module {target!r} (from {shown!r}) failed: "
                        f"ModuleNotFoundError: {_first_line(exc)}") from None
    except Exception as exc:
        raise TaskError(f"importing task module {target!r} (from {shown!r}) failed: "
                        f"{type(exc).__name__}: {_first_line(exc)}") from None


def _where(exc: BaseException, path: Path) -> str:
    """' at line N' for the deepest frame in the task file (or a syntax error's line)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f" at line {exc.lineno}"
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
