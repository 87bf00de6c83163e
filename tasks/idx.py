"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
dimensions, then each dimension as a big-endian uint32, then the values, big-endian,
row-major. Files may be gzipped; we detect that from the content, not the name.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from tuner.errors import DataError

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_FORMAT_HINT = "expected the MNIST IDX format"


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in the IDX file `path` (gzipped or plain), in native byte order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path} is a corrupt or truncated gzip file ({exc}); delete it and fetch it again"
            ) from exc
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4:
        raise DataError(
            f"{path} is truncated: {len(data)} bytes, shorter than the 4-byte IDX header; "
            f"{_FORMAT_HINT}"
        )
    if data[0] != 0 or data[1] != 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{path} is not an IDX file (bad magic 0x{magic:08x}); {_FORMAT_HINT}")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise DataError(
            f"{path} has unknown IDX type code 0x{code:02X}; the IDX format allows {known}"
        )
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions; an IDX array needs at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path} is truncated inside its header: {ndim} dimensions need {header} bytes, "
            f"the file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: shape {dims} of {dtype.name} needs {expected} payload bytes, "
            f"the file has {got}; fetch the file again"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # A native-order, writable copy: torch.from_numpy refuses neither, and callers may mutate.
    return values.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` as IDX, gzipped when the name ends in `.gz`; atomic."""
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, dt in _DTYPES.items() if dt == array.dtype.newbyteorder(">")), None)
    if code is None:
        raise DataError(
            f"cannot write {array.dtype} to IDX file {path}: the IDX format holds uint8, int8, "
            "int16, int32, float32 or float64; convert the array first"
        )
    if not 1 <= array.ndim <= 255:
        raise DataError(f"cannot write a {array.ndim}-d array to IDX; it needs 1 to 255 dims")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same bytes every time
    atomic_write_bytes(path, data)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
