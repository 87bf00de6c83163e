"""The catalogue of bad input and bad stores: each gives one clear `Error:` line.

For every entry: exit code 1, exactly one line starting with "Error:", no traceback, and the
stores untouched (no file created in a fresh home; an existing store's files byte for byte
as they were). Store damage is real: text in place of the database, a truncated copy, a
directory where the file should be, a schema from another Optuna.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tuner.cli.commands import cli
from tuner.search.runner import search

SECRET = "s3cret-pw"
PG_URL = f"postgresql://user:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_error(result: Result, expected: str) -> None:
    output = result.output
    assert result.exit_code == 1, output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert expected in " ".join(output.split()), output


def files(home: Path) -> dict[str, bytes | None]:
    """Every file under `home` with its bytes (None for a directory)."""
    if not home.exists():
        return {}
    return {str(p.relative_to(home)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(home.rglob("*"))}


def search_args(home: Path, *extra: str) -> list[str]:
    return ["search", "--task", "mnist-mlp", "--study", "b", "--optimizers", "sgd",
            "--n-trials", "2", "--epochs", "1", "--batch-size", "512", "--home", str(home),
            *extra]


# -- flags and space files: refused before any data is read or store is made ---------------
FLAG_CASES = [
    (["--lr", "1e-1:1e-3"], "lr range must have LOW < HIGH, but got '1e-1:1e-3'"),
    (["--lr", "-1:1"], "lr must be > 0, but got lr=-1"),
    (["--optimizers", "momentum", "--momentum", "-0.5:0.9"],
     "momentum must be >= 0 and < 1, but got momentum=-0.5"),
    (["--lr", "0.1:0.1"], "lr range '0.1:0.1' has zero width"),
    (["--lr", "abc:1"], "lr must be a number, a LOW:HIGH range or a comma list, but got"),
    (["--optimizers", "adam", "--beta1", "high"], "beta1 must be a number"),
    (["--weight-decay", "0:0.1:log"], "is log-scaled, so LOW must be > 0, but got 0"),
    (["--optimizers", "adam", "--eps", "0:1e-6"], "eps must be > 0, but got eps=0"),
    (["--optimizers", "sgd,adamx"], "unknown optimizer 'adamx'; did you mean 'adam'?"),
    (["--optimizers", "sgd,adam", "--momentum", "adam=0.9"],
     "--momentum adam=0.9: adam has no momentum; momentum applies to"),
    (["--beta1", "0.9"], "none of the optimizers of this study (sgd) has beta1"),
    (["--lr", "rmsprop=1e-3:1e-1"], "rmsprop is not among the optimizers of this study"),
    (["--batch-size", "0,64"], "batch_size must be > 0"),
    (["--scheduler", "cosin"], "unknown scheduler 'cosin'"),
    (["--n-trials", "0"], "n_trials must be >= 1, but got n_trials=0"),
]


@pytest.mark.parametrize(("extra", "expected"), FLAG_CASES,
                         ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_flags(tmp_path: Path, extra: list[str], expected: str) -> None:
    home = tmp_path / "home"
    assert_one_error(invoke(*search_args(home, *extra)), expected)
    assert not home.exists()


def test_an_unknown_task(tmp_path: Path) -> None:
    result = invoke("search", "--task", "mnist-mpl", "--home", str(tmp_path / "home"))
    assert_one_error(result, "unknown task 'mnist-mpl'; did you mean 'mnist-mlp'?")
    assert not (tmp_path / "home").exists()


SPACE_FILES = [
    ('lrr = "1e-4:1e-1"\n', "unknown key 'lrr'; known keys:"),
    ('epochs = "three"\n', "epochs must be an integer, but got 'three'"),
    ("batch_size = true\n", "batch_size must be a number, a string or a list, but got True"),
    ("adam = 3\n", "adam must be a table of that family's hyperparameters, but got 3"),
    ('[adam]\nlr = { low = "a", high = 1 }\n', "low and high must be numbers"),
    ('[adam]\nmomentun = 0.9\n', "momentun: unknown hyperparameter"),
    ("optimizers = [1, 2]\n", "must be a list of family names, but got [1, 2]"),
    ('lr = "1e-1:1e-4"\n', "lr range must have LOW < HIGH"),
    ("lr = [\n", "is not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), SPACE_FILES, ids=[c[1] for c in SPACE_FILES])
def test_bad_space_files(tmp_path: Path, text: str, expected: str) -> None:
    space = tmp_path / "space.toml"
    space.write_text(text)
    home = tmp_path / "home"
    result = invoke("search", "--task", "mnist-mlp", "--space", str(space), "--home", str(home))
    assert_one_error(result, expected)
    assert not home.exists()


def test_a_task_whose_data_is_missing(tmp_path: Path) -> None:
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    result = invoke(*search_args(home, "--data-dir", str(empty)))
    assert_one_error(result, f"no MNIST IDX files in data dir {empty}")
    assert not home.exists()


# -- stores: a real study, then damaged copies of its files ---------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    folder = tmp_path_factory.mktemp("bad-stores") / "home"
    folder.mkdir()
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    search(task="mnist-mlp", study="b", n_trials=1, epochs=1, optimizers=["sgd"], seed=1,
           batch_size="512", home=folder)
    return folder


@pytest.fixture
def study_home(built: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(built, home)
    return home


def put_text(path: Path) -> None:
    path.write_text("these are notes, not a database\n" * 20)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def make_directory(path: Path) -> None:  # unreadable as a file, even for root
    path.unlink()
    path.mkdir()


DAMAGE = {"text": (put_text, "is not an SQLite database"),
          "truncated": (truncate, "is damaged (it holds"),
          "directory": (make_directory, "is a directory, not an SQLite store file")}


@pytest.mark.parametrize("command", ["search", "resume"])
@pytest.mark.parametrize("store", ["opttune.db", "mlflow.db"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_store_files(study_home: Path, command: str, store: str, damage: str) -> None:
    harm, expected = DAMAGE[damage]
    harm(study_home / store)
    before = files(study_home)
    args = search_args(study_home) if command == "search" else \
        ["resume", "b", "--home", str(study_home)]
    assert_one_error(invoke(*args), expected)
    assert files(study_home) == before


def test_a_damaged_mlflow_store_in_a_fresh_home_creates_no_study_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    put_text(home / "mlflow.db")
    before = files(home)
    assert_one_error(invoke(*search_args(home)), "mlflow.db is not an SQLite database")
    assert files(home) == before  # no opttune.db made before the MLflow store was refused


def set_optuna_schema(path: Path, *, revision: str, library: str) -> None:
    with sqlite3.connect(path) as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        con.execute("UPDATE version_info SET library_version = ?", (library,))


@pytest.mark.parametrize(("revision", "library", "expected"), [
    ("v3.0.0.a", "3.0.0", "was made by an older Optuna (schema v3.0.0.a; Optuna"),
    ("v3.0.0.a", None, "was made by an older Optuna; back it up, then upgrade it in place "
                       "with: optuna storage upgrade --storage sqlite:///"),
    ("v9.9.9.z", "9.9.9", "was made by a newer Optuna than this one (schema v9.9.9.z; Optuna"),
], ids=["older", "older-same-library", "newer"])
def test_an_optuna_store_of_another_schema(study_home: Path, revision: str,
                                           library: str | None, expected: str) -> None:
    import optuna

    set_optuna_schema(study_home / "opttune.db", revision=revision,
                      library=library or optuna.__version__)
    before = files(study_home)
    for args in (search_args(study_home), ["resume", "b", "--home", str(study_home)]):
        assert_one_error(invoke(*args), expected)
    assert files(study_home) == before


def test_an_mlflow_store_of_another_schema(study_home: Path) -> None:
    with sqlite3.connect(study_home / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    before = files(study_home)
    assert_one_error(invoke("resume", "b", "--home", str(study_home)),
                     "Detected out-of-date database schema (found version ffffffffffff")
    assert files(study_home) == before


def test_an_mlflow_store_given_as_the_study_store(study_home: Path) -> None:
    url = f"sqlite:///{study_home / 'mlflow.db'}"
    before = files(study_home)
    assert_one_error(invoke("resume", "b", "--home", str(study_home), "--storage", url),
                     "mlflow.db is not an Optuna study store")
    assert files(study_home) == before


def test_an_unknown_study_lists_the_known_ones(study_home: Path) -> None:
    before = files(study_home)
    assert_one_error(invoke("resume", "nope", "--home", str(study_home)),
                     "no study named 'nope' in sqlite:///")
    assert "known studies: b" in invoke("resume", "nope", "--home", str(study_home)).output
    assert files(study_home) == before


def test_resume_without_any_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert_one_error(invoke("resume", "s1", "--home", str(home)), "there is no study store at")
    assert not home.exists()


# -- unreachable databases, and passwords ----------------------------------------------------
@pytest.mark.parametrize("args", [
    ["search", "--task", "mnist-mlp", "--storage", PG_URL],
    ["search", "--task", "mnist-mlp", "--tracking-uri", PG_URL],
    ["resume", "s1", "--storage", PG_URL],
    ["check", "s1", "--storage", PG_URL],
], ids=["search-storage", "search-tracking", "resume", "check"])
def test_an_unreachable_database_never_shows_its_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, args: list[str]) -> None:
    home = tmp_path / "home"
    caplog.set_level(logging.DEBUG)
    result = invoke(*args, "--home", str(home))
    # Without the driver (pip install 'opttune[postgres]') the error says that instead.
    assert_one_error(result, "user:***@127.0.0.1:1/db")
    assert "cannot reach" in result.output or "cannot open" in result.output or \
        "is not installed" in result.output
    assert SECRET not in result.output and SECRET not in caplog.text
    assert not home.exists()  # nothing was created before the error


def test_a_missing_database_driver_is_named(tmp_path: Path) -> None:
    url = f"mysql://user:{SECRET}@127.0.0.1:1/db"  # no MySQL driver is installed
    result = invoke(*search_args(tmp_path / "home", "--storage", url))
    assert_one_error(result, "the database driver 'MySQLdb' for mysql://user:***@127.0.0.1:1/db "
                             "is not installed")
    assert SECRET not in result.output
