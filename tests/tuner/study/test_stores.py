"""tuner.study.stores: where stores live, masked passwords, clear errors on bad files."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tuner.errors import StoreError
from tuner.study import stores
from tuner.study.locations import HOME_ENV, redact, resolve_stores, sqlite_path
from tuner.study.stores import check_sqlite_file, open_storage


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


_HOLD_S = 60  # the longest a held opener waits for the others: reached only by a failing test


class _Race:
    """`openers` threads open one new SQLite store at once, and are held, with a condition
    variable, at the moment the race to create it is won or lost: when SQLAlchemy has checked
    which of Optuna's tables exist and is about to create the missing ones (the metadata's
    `before_create` event; `after_create` ends the creation).

    At its first check, each opener waits until every opener has either come to the folder
    lock (called flock) or reached its own check. The first to go on creates the store; an
    opener that checked while another had not yet made the store (found no tables, so it will
    create them all) waits until that one has opened it, then creates what it found missing:
    it loses, for certain, unless something (a retry) saves it. A working folder lock lets
    no opener check while another is between its check and the end of its creation."""

    def __init__(self, openers: int) -> None:
        self.openers = openers
        self.cond = threading.Condition()
        self.arrived: set[int] = set()  # at the folder lock, or at a check
        self.creating: set[int] = set()  # between a check and the end of that creation
        self.overlaps = 0  # first checks made while another opener was creating
        self.winner: int | None = None
        self.winner_opened = False
        self.checked = threading.local()

    def _arrive(self) -> None:  # under self.cond
        self.arrived.add(threading.get_ident())
        self.cond.notify_all()

    def flock(self, real: Any) -> Any:
        def watched(fd: int, operation: int) -> None:
            with self.cond:
                self._arrive()
            real(fd, operation)  # blocks while another opener holds the lock
        return watched

    def before_create(self, *_args: Any, **_kwargs: Any) -> None:
        me = threading.get_ident()
        with self.cond:
            if getattr(self.checked, "done", False):
                self.creating.add(me)
                return  # a retry: it goes on at once
            self.checked.done = True
            self.overlaps += bool(self.creating)
            self.creating.add(me)
            self._arrive()
            assert self.cond.wait_for(lambda: len(self.arrived) == self.openers, _HOLD_S), \
                f"{len(self.arrived)} of {self.openers} openers came to the store"
            if self.winner is None:
                self.winner = me
                return
            assert self.cond.wait_for(lambda: self.winner_opened, _HOLD_S), "no store made"

    def after_create(self, *_args: Any, **_kwargs: Any) -> None:
        with self.cond:
            self.creating.discard(threading.get_ident())

    def opened(self) -> None:
        with self.cond:
            if self.winner == threading.get_ident():
                self.winner_opened = True
                self.cond.notify_all()

    def run(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Open folder/opttune.db from every opener at once; the errors they met."""
        import fcntl

        from optuna.storages._rdb import models
        from sqlalchemy import event

        url = f"sqlite:///{folder / 'opttune.db'}"
        monkeypatch.setattr(stores, "fcntl", SimpleNamespace(
            LOCK_EX=fcntl.LOCK_EX, LOCK_SH=fcntl.LOCK_SH, flock=self.flock(fcntl.flock)))
        errors: list[str] = []

        def open_one() -> None:
            try:
                open_storage(url, create=True).get_all_studies()
            except Exception as exc:
                errors.append(str(exc))
            finally:
                self.opened()

        metadata = models.BaseModel.metadata
        event.listen(metadata, "before_create", self.before_create)
        event.listen(metadata, "after_create", self.after_create)
        try:
            threads = [threading.Thread(target=open_one) for _ in range(self.openers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            event.remove(metadata, "before_create", self.before_create)
            event.remove(metadata, "after_create", self.after_create)
        return errors


def _no_folder_lock(path: Path | None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def test_openers_racing_to_create_a_store_all_succeed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards open_storage against openers of one new store at once (--jobs children,
    workers): the folder lock alone, and the retry alone, each let every opener through the
    interleaving that, without either, loses for certain (see _Race)."""
    # Each store is made by Optuna itself (a copied template would leave no race to lose).
    monkeypatch.setattr(stores.store_template, "start_from_template",
                        lambda path, *, library: False)
    monkeypatch.setattr(stores.store_template, "keep_as_template", lambda path, *, library: None)
    openers = 4
    # The race is real: with neither the folder lock nor the retry, all but one opener lose.
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_folder_lock", _no_folder_lock)
        patch.setattr(stores, "_CREATE_ATTEMPTS", 1)
        race = _Race(openers)
        lost = race.run(tmp_path / "bare", patch)
    assert race.overlaps == openers - 1
    assert len(lost) == openers - 1 and all("opttune.db" in e and "already exists" in e
                                            for e in lost), lost
    # The folder lock alone serialises them on one machine: every opener waits at the lock
    # while the first one creates, and none checks before the store is made ...
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_CREATE_ATTEMPTS", 1)
        race = _Race(openers)
        assert race.run(tmp_path / "locked", patch) == []
    assert race.overlaps == 0
    # ... and the retry alone (what a server store has) lets the losers through.
    with monkeypatch.context() as patch:
        patch.setattr(stores, "_folder_lock", _no_folder_lock)
        race = _Race(openers)
        assert race.run(tmp_path / "retried", patch) == []
    assert race.overlaps == openers - 1  # they lost the first attempt, as above


@contextlib.contextmanager
def _sqlite_writes(callback: Callable[[str, str, int, int], None]) -> Iterator[str]:
    """Register an SQLite VFS that is the default one, except that it calls
    `callback(stage, file, offset, size)` just before and just after each write to any file
    ("before"/"after"), in the writing thread; yields the VFS's name (open the database with
    ``file:PATH?vfs=NAME``). The writer waits there while the callback runs, so the callback
    sees the files exactly as each of SQLite's writes leaves them, every one of them.

    ctypes over the SQLite library that Python's sqlite3 uses: the VFS is a copy of the
    default one whose xOpen gives each file a copy of its write methods with xWrite wrapped.
    Close every connection that uses it before leaving the block."""
    import _sqlite3
    import ctypes as c

    lib = c.CDLL(_sqlite3.__file__)  # its symbols, and those of the libsqlite3 it links to
    if not all(hasattr(lib, f) for f in ("sqlite3_vfs_find", "sqlite3_vfs_register",
                                         "sqlite3_vfs_unregister")):
        pytest.skip("this Python's sqlite3 does not export SQLite's VFS functions")

    class IoMethods(c.Structure):
        pass

    class File(c.Structure):
        _fields_ = [("pMethods", c.POINTER(IoMethods))]

    x_write = c.CFUNCTYPE(c.c_int, c.POINTER(File), c.c_void_p, c.c_int, c.c_int64)
    IoMethods._fields_ = [("iVersion", c.c_int), ("xClose", c.c_void_p), ("xRead", c.c_void_p),
                          ("xWrite", x_write)] + [(n, c.c_void_p) for n in (
        "xTruncate", "xSync", "xFileSize", "xLock", "xUnlock", "xCheckReservedLock",
        "xFileControl", "xSectorSize", "xDeviceCharacteristics", "xShmMap", "xShmLock",
        "xShmBarrier", "xShmUnmap", "xFetch", "xUnfetch")]

    class Vfs(c.Structure):
        pass

    # The file name is passed on as the pointer SQLite gave (SQLite keeps it, and reads the
    # URI parameters stored after it), never as a copy.
    x_open = c.CFUNCTYPE(c.c_int, c.POINTER(Vfs), c.c_void_p, c.POINTER(File), c.c_int,
                         c.POINTER(c.c_int))
    Vfs._fields_ = [("iVersion", c.c_int), ("szOsFile", c.c_int), ("mxPathname", c.c_int),
                    ("pNext", c.c_void_p), ("zName", c.c_char_p), ("pAppData", c.c_void_p),
                    ("xOpen", x_open)] + [(n, c.c_void_p) for n in (
        "xDelete", "xAccess", "xFullPathname", "xDlOpen", "xDlError", "xDlSym", "xDlClose",
        "xRandomness", "xSleep", "xCurrentTime", "xGetLastError", "xCurrentTimeInt64",
        "xSetSystemCall", "xGetSystemCall", "xNextSystemCall")]
    lib.sqlite3_vfs_find.restype = c.POINTER(Vfs)
    lib.sqlite3_vfs_find.argtypes = [c.c_char_p]
    lib.sqlite3_vfs_register.argtypes = [c.POINTER(Vfs), c.c_int]
    lib.sqlite3_vfs_unregister.argtypes = [c.POINTER(Vfs)]
    default = lib.sqlite3_vfs_find(None)
    names: dict[int, str] = {}  # the address of an open file → its name
    methods: dict[int, tuple[Any, Any]] = {}  # the real methods' address → (ours, theirs)

    def write(file: Any, data: Any, amount: int, offset: int) -> int:
        real = methods[c.addressof(file.contents.pMethods.contents)][1]
        name = names.get(c.addressof(file.contents), "?")
        callback("before", name, offset, amount)
        result: int = real.xWrite(file, data, amount, offset)
        callback("after", name, offset, amount)
        return result

    def open_file(vfs: Any, name: int | None, file: Any, flags: int, out_flags: Any) -> int:
        result: int = default.contents.xOpen(default, name, file, flags, out_flags)
        if result == 0 and file.contents.pMethods:
            names[c.addressof(file.contents)] = c.string_at(name).decode() if name else "?"
            theirs = file.contents.pMethods.contents
            if c.addressof(theirs) not in methods:
                ours = IoMethods.from_buffer_copy(theirs)
                ours.xWrite = wrapped_write
                methods[c.addressof(ours)] = methods[c.addressof(theirs)] = (ours, theirs)
            file.contents.pMethods = c.pointer(methods[c.addressof(theirs)][0])
        return result

    wrapped_write = x_write(write)
    wrapped_open = x_open(open_file)
    vfs = Vfs.from_buffer_copy(default.contents)
    vfs.zName, vfs.xOpen, vfs.pNext = b"opttune-test-writes", wrapped_open, None
    assert lib.sqlite3_vfs_register(c.byref(vfs), 0) == 0
    try:
        yield "opttune-test-writes"
    finally:
        lib.sqlite3_vfs_unregister(c.byref(vfs))


def test_a_store_being_written_is_never_called_damaged(tmp_path: Path) -> None:
    """Guards check_sqlite_file against a store that SQLite is writing right now: a writer
    rewrites the header (with the new size) before it grows the file, and a new store's first
    page lands in a file that was empty; a check made at any moment must not call the store
    damaged.

    Not a checker thread that may or may not catch those moments: SQLite writes through a VFS
    that stops it before and after each of its writes (_sqlite_writes), and a check runs there
    every time, so at every state the files pass through. The test also asserts that the
    dangerous states were among them. (A check opens and closes the file, which drops this
    process's POSIX locks on it; that matters only to another connection, and there is none.)
    """
    path = tmp_path / "opttune.db"
    journal = Path(f"{path}-journal")
    seen: list[tuple[int, int, bool]] = []  # size, the size the header records, a journal?
    called_damaged: list[str] = []

    def check(stage: str, name: str, offset: int, amount: int) -> None:
        header = path.read_bytes()[:100]
        recorded = int.from_bytes(header[28:32], "big") * int.from_bytes(header[16:18], "big") \
            if len(header) == 100 else 0
        seen.append((path.stat().st_size, recorded, journal.exists()))
        try:
            check_sqlite_file(path)
        except StoreError as exc:
            called_damaged.append(f"{stage} writing {amount} bytes at {offset} of {name}: {exc}")

    with _sqlite_writes(check) as vfs:
        con = sqlite3.connect(f"file:{path}?vfs={vfs}", uri=True)
        try:
            con.execute("CREATE TABLE t (x BLOB)")
            for _ in range(20):
                con.execute("INSERT INTO t VALUES (zeroblob(20000))")
                con.commit()
        finally:
            con.close()
    assert called_damaged == []
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    assert path.stat().st_size > 20 * 20000 and len(seen) > 20
    assert (0, 0, True) in seen  # an empty file, its first page about to land
    short = {size for size, recorded, _ in seen if 0 < size < recorded}  # header ahead of size
    assert page in short  # the first page in a file that was empty: the header says more
    assert any(size > page for size in short)  # a store with pages: rewritten, not grown yet


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
