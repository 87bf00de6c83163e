"""tuner.study.stores: where stores live, masked passwords, clear errors on bad files."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from tuner.errors import StoreError
from tuner.study import stores
from tuner.study.stores import (
    HOME_ENV,
    check_sqlite_file,
    open_storage,
    redact,
    resolve_stores,
    sqlite_path,
)


def test_home_flag_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    stores = resolve_stores(home=tmp_path / "flag")
    assert stores.home == tmp_path / "flag"
    assert stores.storage_url == f"sqlite:///{tmp_path / 'flag' / 'opttune.db'}"
    assert stores.tracking_uri == f"sqlite:///{tmp_path / 'flag' / 'mlflow.db'}"
    assert stores.artifact_root == tmp_path / "flag" / "mlartifacts"
    assert stores.sqlite_path == tmp_path / "flag" / "opttune.db"


def test_env_then_studies_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert resolve_stores().home == tmp_path / "env"
    monkeypatch.setenv(HOME_ENV, "")  # set but empty: as if unset
    assert resolve_stores().home == tmp_path / "studies"
    monkeypatch.delenv(HOME_ENV)
    assert resolve_stores().home == tmp_path / "studies"
    # A relative --home is made absolute against the current directory, once.
    assert resolve_stores(home="rel").home == tmp_path / "rel"


def test_explicit_urls_override(tmp_path: Path) -> None:
    stores = resolve_stores(home=tmp_path, storage="postgresql://u:pw@db/opt",
                            tracking_uri="http://mlflow:5000")
    assert stores.storage_url == "postgresql://u:pw@db/opt"
    assert stores.tracking_uri == "http://mlflow:5000"
    assert stores.sqlite_path is None
    assert stores.artifact_root == tmp_path / "mlartifacts"


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////abs/o.db") == Path("/abs/o.db")
    assert sqlite_path("sqlite:///rel.db?timeout=5") == Path("rel.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("mysql://h/db") is None


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://user:s3cr3t@host:5432/db",
         "postgresql+psycopg://user:***@host:5432/db"),
        ("cannot connect to mysql://root:hunter2@10.0.0.1/x: refused",
         "cannot connect to mysql://root:***@10.0.0.1/x: refused"),
        ("postgresql://user:pa/ss:w@host/db", "postgresql://user:***@host/db"),
        ("a postgresql://a:1@h/d and http://b:2@h:80/m",
         "a postgresql://a:***@h/d and http://b:***@h:80/m"),
    ],
)
def test_redact_masks_passwords(text: str, masked: str) -> None:
    assert redact(text) == masked
    assert not any(pw in redact(text) for pw in ("secret", "s3cr3t", "hunter2", "pa/ss"))


@pytest.mark.parametrize(
    "text",
    ["sqlite:////tmp/x/opttune.db", "postgresql://user@host/db", "http://host:5000/path",
     "lr=0.001 at 12:30", "no url here: a:b@c", "time 10:20:30"],
)
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_check_sqlite_file(tmp_path: Path) -> None:
    check_sqlite_file(tmp_path / "missing.db")  # nothing to check yet
    empty = tmp_path / "empty.db"
    empty.touch()
    check_sqlite_file(empty)  # sqlite creates its schema in an empty file
    real = tmp_path / "real.db"
    sqlite3.connect(real).execute("create table t (x)").connection.close()
    check_sqlite_file(real)
    junk = tmp_path / "junk.db"
    junk.write_text("this is a text file, not a database\n")
    with pytest.raises(StoreError, match=r"junk\.db is not an SQLite database \(it may be corrupt "
                                         r"or another kind of file\); move it away"):
        check_sqlite_file(junk)
    with pytest.raises(StoreError, match="is a directory, not an SQLite store file"):
        check_sqlite_file(tmp_path)


def test_open_storage_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "opttune.db"
    with pytest.raises(StoreError, match=r"there is no study store at .*nowhere/opttune\.db; run "
                                         r"`opttune search` first, or give the right --home"):
        open_storage(f"sqlite:///{missing}", create=False)
    assert not missing.parent.exists()  # nothing created on the way to the error
    junk = tmp_path / "opttune.db"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(StoreError, match="is not an SQLite database"):
        open_storage(f"sqlite:///{junk}", create=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match=r"cannot create the store folder .*a-file/home: Not a "
                                         r"directory; give a writable --home"):
        open_storage(f"sqlite:///{a_file / 'home' / 'opttune.db'}", create=True)
    with pytest.raises(StoreError, match="is not a valid database URL"):
        open_storage("not a url", create=True)
    with pytest.raises(StoreError) as info:
        open_storage("nosuchdb://user:topsecret@host/db", create=True)
    assert "topsecret" not in str(info.value) and "user:***@host" in str(info.value)


def test_open_storage_creates_a_real_store(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "opttune.db"
    storage = open_storage(f"sqlite:///{path}", create=True)
    assert path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert storage.get_all_studies() == []
    again = open_storage(f"sqlite:///{path}", create=False)  # now it exists
    assert again.get_all_studies() == []


def _open_at_once(tmp_path: Path, *, openers: int = 6, stores_made: int = 4) -> list[str]:
    """Open `stores_made` new SQLite stores, each by `openers` threads released together
    (as --jobs children and workers start); the errors they met."""
    errors: list[str] = []
    for number in range(stores_made):
        url = f"sqlite:///{tmp_path / str(number) / 'opttune.db'}"
        barrier = threading.Barrier(openers)

        def open_one(url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                open_storage(url, create=True).get_all_studies()
            except Exception as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=open_one) for _ in range(openers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return errors


def _no_folder_lock(path: Path | None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def test_openers_racing_to_create_a_store_all_succeed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Each store is made by Optuna itself (a copied template would leave no race to lose).
    monkeypatch.setattr(stores.store_template, "start_from_template",
                        lambda path, *, library: False)
    monkeypatch.setattr(stores.store_template, "keep_as_template", lambda path, *, library: None)
    # The race is real: with neither the folder lock nor the retry, openers lose it.
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_folder_lock", _no_folder_lock)
        patch.setattr(stores, "_CREATE_ATTEMPTS", 1)
        lost = _open_at_once(tmp_path / "bare")
    assert lost and all("opttune.db" in e for e in lost), lost
    # The folder lock alone serialises them on one machine ...
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_CREATE_ATTEMPTS", 1)
        assert _open_at_once(tmp_path / "locked") == []
    # ... and the retry alone (what a server store has) lets the losers through.
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_folder_lock", _no_folder_lock)
        assert _open_at_once(tmp_path / "retried") == []


def test_a_store_being_written_is_never_called_damaged(tmp_path: Path) -> None:
    # A writer rewrites the header before it grows the file, and its first page lands in a
    # file that was empty: a check reading meanwhile must not call the store damaged.
    path = tmp_path / "opttune.db"
    done = threading.Event()

    def write() -> None:
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE t (x BLOB)")
            for _ in range(400):
                con.execute("INSERT INTO t VALUES (zeroblob(20000))")
                con.commit()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    checks = 0
    try:
        while not done.is_set():
            check_sqlite_file(path)
            checks += 1
    finally:
        writer.join()
    assert checks > 100 and path.stat().st_size > 400 * 20000


def test_a_short_store_with_a_journal_is_left_to_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "opttune.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x BLOB)")
        con.executemany("INSERT INTO t VALUES (zeroblob(20000))", [()] * 10)
    path.write_bytes(path.read_bytes()[:8192])
    with pytest.raises(StoreError, match=r"is damaged \(it holds 8192 bytes of the"):
        check_sqlite_file(path)
    # A crash mid-commit leaves the journal that SQLite rolls back from on opening.
    Path(f"{path}-journal").write_bytes(b"\0" * 512)
    check_sqlite_file(path)
