"""tasks.registry: built-in names, file.py:attr, module:attr and entry points, and their errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tasks.base import Task
from tasks.registry import get_task, list_tasks
from tuner.errors import TaskError

TASK_FILE = """
import torch
from tasks import Task, TaskData

def load_data():
    x = torch.randn(40, 3)
    return TaskData.split(x, (x[:, 0] > 0).long(), source="random")

task = Task(name="{name}", load_data=load_data,
            build_model=lambda params: torch.nn.Linear(3, 2))
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(ref: str) -> str:
    with pytest.raises(TaskError) as info:
        get_task(ref)
    return str(info.value)


def test_builtin_names() -> None:
    names = [t.name for t in list_tasks()]
    for name in ("mnist-mlp", "fashion-mnist-cnn", "digits-mlp", "diabetes-mlp"):
        assert name in names
        assert get_task(name).ref == name
    assert get_task("diabetes-mlp").direction == "minimize"
    assert "did you mean 'digits-mlp'?" in load_error("digit-mlp")


def test_a_file_task_is_stored_by_its_absolute_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mine.py", TASK_FILE.format(name="mine"))
    monkeypatch.chdir(tmp_path)
    task = get_task("mine.py:task")
    assert task.name == "mine"
    assert task.ref == f"{tmp_path.resolve() / 'mine.py'}:task"
    assert get_task(task.ref).name == "mine"  # what resume does, from anywhere


def test_a_function_returning_a_task(tmp_path: Path) -> None:
    path = write(tmp_path / "factory.py", TASK_FILE.format(name="made") + textwrap.dedent("""
        def make():
            return task
        """))
    assert get_task(f"{path}:make").name == "made"


def test_module_attr_on_the_path_and_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # undo what the registry appends
    write(tmp_path / "opttune_demo_pkg" / "__init__.py", "")
    write(tmp_path / "opttune_demo_pkg" / "tasks.py", TASK_FILE.format(name="from-module"))
    monkeypatch.chdir(tmp_path)  # not on sys.path: the registry looks here, as `python -m`
    task = get_task("opttune_demo_pkg.tasks:task")
    assert (task.name, task.ref) == ("from-module", "opttune_demo_pkg.tasks:task")


def test_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution's metadata, found on sys.path by importlib.metadata."""
    write(tmp_path / "opttune_plugin_demo.py", TASK_FILE.format(name="plugged"))
    write(tmp_path / "opttune_plugin_demo-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: opttune-plugin-demo\nVersion: 1.0\n")
    write(tmp_path / "opttune_plugin_demo-1.0.dist-info" / "entry_points.txt",
          "[opttune.tasks]\nplugged = opttune_plugin_demo:task\n"
          "broken-plugin = opttune_plugin_demo:nothing_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("plugged")
    assert (task.name, task.ref) == ("plugged", "plugged")
    names = [t.name for t in list_tasks()]
    assert "plugged" in names and "broken-plugin" not in names  # listed; the broken one is not
    assert "has no attribute 'nothing_here'" in load_error("broken-plugin")


@pytest.mark.parametrize(("source", "expected"), [
    ("import torch\nx = (\n", "failed at line 2: SyntaxError"),
    ("import torch\n\n1 / 0\n", "failed at line 3: ZeroDivisionError: division by zero"),
    ("import no_such_module_for_opttune\n",
     "failed at line 1: ModuleNotFoundError: No module named 'no_such_module_for_opttune'"),
    ("from tasks import Task\ntask = Task(name='two words', load_data=print, "
     "build_model=print)\n", "ValueError: Task name must be letters, digits"),
    ("from tasks import Task\ntask = Task(name='t', load_data=print, build_model=print, "
     "hyperparams={'hidden': [64, 128]})\n",
     "Task hyperparams['hidden'] must be a search-space string such as '64,128,256'"),
])
def test_a_file_that_does_not_import(tmp_path: Path, source: str, expected: str) -> None:
    path = write(tmp_path / "broken.py", source)
    message = load_error(f"{path}:task")
    assert message.startswith(f"importing task file {path} failed")
    assert expected in message


def test_an_attribute_that_is_not_a_task(tmp_path: Path) -> None:
    path = write(tmp_path / "things.py", TASK_FILE.format(name="things") + textwrap.dedent("""
        model = torch.nn.Linear(3, 2)
        class Net(torch.nn.Module):
            pass
        def nothing():
            return 42
        def boom():
            raise RuntimeError("no data today")
        """))
    assert "model in " in load_error(f"{path}:model")
    assert "is a Linear, not a tasks.Task" in load_error(f"{path}:model")
    assert "is a class Net, not a tasks.Task" in load_error(f"{path}:Net")
    assert "nothing() in" in load_error(f"{path}:nothing")
    assert "returned a value of type int, not a tasks.Task" in load_error(f"{path}:nothing")
    assert "RuntimeError: no data today" in load_error(f"{path}:boom")
    assert "has no attribute 'tsk'" in load_error(f"{path}:tsk")
    assert "its tasks: task" in load_error(f"{path}:tsk")


def test_references_that_name_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in load_error("missing.py:task")
    assert str(tmp_path) in load_error("missing.py:task")
    assert "add its name, e.g. --task mine.py:task" in load_error("mine.py")
    message = load_error("no_such_pkg_for_opttune.tasks:task")
    assert "no module named 'no_such_pkg_for_opttune'" in message
    assert "path/to/file.py:attr" in message
    assert "must look like module:attr" in load_error(":task")


def test_task_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="loss must be 'cross_entropy'"):
        Task(name="t", load_data=print, build_model=print, loss="l1")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        Task(name="t", load_data=print, build_model=print, batch_size=0)
    with pytest.raises(ValueError, match="build_model must be a function"):
        Task(name="t", load_data=print, build_model="model")  # type: ignore[arg-type]
