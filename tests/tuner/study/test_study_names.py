"""Study names that are awkward as file names: spaces, other scripts, 200 and 450 characters,
and two names that differ only in "/" against "_".

Each name gets a real tiny search (digits-mlp, 2 trials of 1 epoch, so that the search logs
its plots) and a retrained model, once for the module; the tests then look at every place a
name goes: the Optuna store, the MLflow experiments, the artifact folders, the model folders,
and the commands that read a study back. Names that map to folders must keep "a/b" and "a_b"
apart, and map each name to the same folder every time.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from tuner.cli.commands import cli

SPACES = "with spaces"
UNICODE = "étude ünïcode 研究"
LONG = ("long name " * 20)[:200]  # ASCII, 200 characters: a folder takes it as it is
LONGEST = ("長い名前・" * 90)[:450]  # the longest name allowed, 1,350 bytes as UTF-8
SLASH = "a/b"
UNDERSCORE = "a_b"
NAMES = [SPACES, UNICODE, LONG, LONGEST, SLASH, UNDERSCORE]


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory,
          _mlflow_template: Path) -> Iterator[tuple[Path, dict[str, dict[str, Any]]]]:
    """A home with one searched and retrained study of each name in NAMES, and the retrain
    results (`retrain --format json`) by name."""
    home = tmp_path_factory.mktemp("names") / "home"
    home.mkdir()
    shutil.copy(_mlflow_template, home / "mlflow.db")
    retrained: dict[str, dict[str, Any]] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTTUNE_NO_DOWNLOAD", "1")
        env.setenv("OPTTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        env.delenv("OPTTUNE_HOME", raising=False)
        for name in NAMES:
            result = _cli("search", "--task", "digits-mlp", "--study", name, "--n-trials", "2",
                          "--epochs", "1", "--optimizers", "adam", "--seed", "0",
                          "--device", "cpu", "--home", str(home))
            assert result.exit_code == 0, (name, result.output)
            result = _cli("retrain", name, "--format", "json", "--home", str(home))
            assert result.exit_code == 0, (name, result.output)
            retrained[name] = json.loads(result.stdout)
        yield home, retrained


def _experiments(home: Path) -> dict[str, Any]:
    """The MLflow store's experiments (active and deleted) by name."""
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return {e.name: e for e in client.search_experiments(view_type=ViewType.ALL)}


def _study_names(home: Path) -> list[str]:
    with sqlite3.connect(f"file:{home / 'opttune.db'}?mode=ro", uri=True) as con:
        return sorted(row[0] for row in con.execute("SELECT study_name FROM studies"))


def _artifact_folder(home: Path, name: str) -> Path:
    """Study `name`'s artifact folder, as its MLflow experiment records it."""
    uri = urllib.parse.urlparse(_experiments(home)[name].artifact_location)
    assert uri.scheme == "file", uri
    return Path(urllib.request.url2pathname(uri.path))


@pytest.mark.slow
def test_every_name_is_searched_listed_and_read_back(
        named: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    """Guards the commands that take a study name: `studies` lists each name exactly, and
    `trials`, `best` and `export` (JSON and CSV) read each one's own two trials."""
    home, _ = named
    assert _study_names(home) == sorted(NAMES)  # the subjects: one study per name

    listed = _cli("studies", "--format", "json", "--home", str(home))
    assert listed.exit_code == 0, listed.output
    assert sorted(s["study"] for s in json.loads(listed.stdout)) == sorted(NAMES)
    table = _cli("studies", "--home", str(home))
    assert table.exit_code == 0, table.output
    for short in (SPACES, UNICODE, SLASH, UNDERSCORE):
        assert short in table.output, table.output

    for i, name in enumerate(NAMES):
        trials = _cli("trials", name, "--format", "json", "--home", str(home))
        assert trials.exit_code == 0, (name, trials.output)
        rows = json.loads(trials.stdout)
        assert [r["number"] for r in rows] == [0, 1] and {r["state"] for r in rows} == \
            {"COMPLETE"}, (name, rows)

        best = _cli("best", name, "--format", "json", "--home", str(home))
        assert best.exit_code == 0, (name, best.output)
        assert json.loads(best.stdout)["study"] == name
        assert json.loads(best.stdout)["run_id"] in {r["run_id"] for r in rows}

        for kind in ("json", "csv"):
            out = tmp_path / f"study-{i}.{kind}"
            exported = _cli("export", name, "-o", str(out), "--home", str(home))
            assert exported.exit_code == 0, (name, exported.output)
            assert out.exists(), exported.output
        document = json.loads((tmp_path / f"study-{i}.json").read_text(encoding="utf-8"))
        assert document["study"] == name
        assert [t["run_id"] for t in document["trials"]] == [r["run_id"] for r in rows]
        lines = (tmp_path / f"study-{i}.csv").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 + 2, lines


@pytest.mark.slow
def test_each_name_has_its_own_experiment_and_artifact_folder(
        named: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    """Guards the MLflow side of names: one experiment per name (the study's), and one artifact
    folder per name, directly under the home's artifact root ("a/b" makes no folder "a"),
    holding that study's runs and plots."""
    from tuner.study.meta import StudyMeta
    from tuner.study.stores import open_storage
    from tuner.study.studies import load_study

    home, _ = named
    experiments = _experiments(home)
    storage = open_storage(f"sqlite:///{home / 'opttune.db'}", create=False)
    root = home / "mlartifacts"
    folders = {}
    for name in NAMES:
        meta = StudyMeta.from_study(load_study(storage, name))
        experiment = experiments[name]  # an experiment of exactly that name ...
        assert experiment.experiment_id == meta.mlflow.experiment_id  # ... the study's
        assert experiment.lifecycle_stage == "active"
        folder = _artifact_folder(home, name)
        assert folder.parent == root, (name, folder)
        plots = folder / meta.mlflow.parent_run_id / "artifacts" / "plots"
        assert (plots / "study_plots.html").is_file(), (name, list(folder.rglob("*")))
        folders[name] = folder
    assert len(set(folders.values())) == len(NAMES), folders
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in folders.values())
    # A name a folder can hold keeps it as it is; the others get a stable, distinct one.
    assert folders[SPACES].name == SPACES and folders[UNICODE].name == UNICODE
    assert folders[LONG].name == LONG and folders[UNDERSCORE].name == UNDERSCORE
    assert folders[SLASH].name.startswith("a_b-") and folders[SLASH] != folders[UNDERSCORE]
    assert len(folders[LONGEST].name.encode()) <= 255


@pytest.mark.slow
def test_each_name_has_its_own_folder_name_every_time(
        named: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    """Guards retrain's model folders: one per name under <home>/models, "a/b" apart from
    "a_b" (which keeps its plain `a_b-trial-N`), each holding its own study's model; a second
    retrain of a name writes to the same folder."""
    home, retrained = named
    models = home / "models"
    folders = {name: Path(r["folder"]) for name, r in retrained.items()}
    assert set(folders) == set(NAMES)
    for name, folder in folders.items():
        assert folder.parent == models, (name, folder)
        assert (folder / "model.pt").is_file()
        record = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert record["study"] == name and record["trial"] == retrained[name]["trial"]
    assert len(set(folders.values())) == len(NAMES), folders
    assert sorted(models.iterdir()) == sorted(folders.values())
    assert folders[UNDERSCORE].name == f"a_b-trial-{retrained[UNDERSCORE]['trial']}"
    assert folders[SLASH] != folders[UNDERSCORE]

    again = _cli("retrain", SLASH, "--format", "json", "--home", str(home))
    assert again.exit_code == 0, again.output
    assert Path(json.loads(again.stdout)["folder"]) == folders[SLASH]  # stable
    assert sorted(models.iterdir()) == sorted(folders.values())


@pytest.mark.slow
def test_deleting_a_b_leaves_a_underscore_b_intact(
        named: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    """Guards `delete` against a look-alike name: deleting "a/b" (in a copy of the home, so
    that the other tests keep theirs) removes it from the Optuna store and marks its
    experiment deleted, and leaves "a_b" whole: its study and trials, its active experiment
    and runs, its artifact folder and its model folder."""
    home, retrained = named
    copy = tmp_path / "home"
    shutil.copytree(home, copy)  # artifacts stay where the experiments point: in `home`
    before = _cli("trials", UNDERSCORE, "--format", "json", "--home", str(copy))
    assert before.exit_code == 0, before.output
    files = sorted(p for p in _artifact_folder(copy, UNDERSCORE).rglob("*"))
    assert files  # the subject: a_b's artifacts, there before the delete

    deleted = _cli("delete", SLASH, "--yes", "--home", str(copy))
    assert deleted.exit_code == 0, deleted.output
    assert _study_names(copy) == sorted(set(NAMES) - {SLASH})
    experiments = _experiments(copy)
    assert experiments[SLASH].lifecycle_stage == "deleted"
    assert experiments[UNDERSCORE].lifecycle_stage == "active"
    after = _cli("trials", UNDERSCORE, "--format", "json", "--home", str(copy))
    assert after.exit_code == 0 and json.loads(after.stdout) == json.loads(before.stdout)
    client = MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    runs = client.search_runs([experiments[UNDERSCORE].experiment_id])
    assert {r.info.run_id for r in runs} >= {r["run_id"] for r in json.loads(after.stdout)}
    assert sorted(p for p in _artifact_folder(copy, UNDERSCORE).rglob("*")) == files
    model = copy / "models" / Path(retrained[UNDERSCORE]["folder"]).name
    assert (model / "model.pt").is_file()
    gone = _cli("trials", SLASH, "--home", str(copy))
    assert gone.exit_code == 1 and "Error:" in gone.output


def test_a_name_too_long_is_refused_in_one_line_before_any_work(home: Path) -> None:
    """Guards the name limit (MLflow takes experiment names up to 500 characters; a deleted
    study's experiment is renamed with 21 more): a 451-character name fails with one
    `Error:` line, no traceback, and nothing written to either store."""
    name = "n" * 451
    result = _cli("search", "--task", "digits-mlp", "--study", name, "--n-trials", "1",
                  "--epochs", "1", "--device", "cpu", "--home", str(home))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "at most 450 characters" in errors[0], result.output
    assert sorted(p.name for p in home.iterdir()) == ["mlflow.db"]  # no store, no folder
    assert name not in _experiments(home)


def test_names_map_to_distinct_stable_single_folders() -> None:
    """Guards the name-to-folder mapping itself, for names no search above tries: each
    maps to one folder name (no separator, not "." or "..", under 255 bytes), the same one
    every time, and no two names of the set share a folder, in either mapping; plain names
    keep the folder they always had."""
    from tuner.study.names import artifact_folder, folder_name

    names = [SLASH, UNDERSCORE, "a\\b", ".", "..", "../up", "a b", "a_b_", "_a_b", "ÄB", "AB",
             "x" * 200, "x" * 201, "é" * 100, "é" * 101, "研究", "研究2", LONGEST]
    for mapping in (artifact_folder, folder_name):
        folders = [mapping(name) for name in names]
        assert len(set(folders)) == len(names), list(zip(names, folders, strict=True))
        assert folders == [mapping(name) for name in names]  # stable
        for folder in folders:
            assert "/" not in folder and "\\" not in folder and folder not in (".", "..")
            assert len(f"{folder}-trial-999999".encode()) <= 255, folder
    assert [folder_name(n) for n in ("s1", "digits-mlp", "a_b", "x" * 200)] == \
        ["s1", "digits-mlp", "a_b", "x" * 200]  # as before the mapping existed
    assert [artifact_folder(n) for n in (SPACES, UNICODE, "x" * 200)] == \
        [SPACES, UNICODE, "x" * 200]
