"""tasks.idx: IDX round trips and the errors for files that are not what they claim."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tasks.idx import read_idx, write_idx
from tuner.errors import DataError


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Hand-made IDX bytes, independent of write_idx, so the reader is checked against the spec."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_round_trip(tmp_path: Path, name: str, dtype: str) -> None:
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / name
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_reads_the_spec_layout(tmp_path: Path) -> None:
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    (tmp_path / "labels").write_bytes(_idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), labels)
    ints = np.array([[1, -2], [300000, -400000]], dtype=np.int32)
    (tmp_path / "ints").write_bytes(_idx_bytes(ints, code=0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), ints)


def test_gzip_is_detected_from_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    (tmp_path / "plain-named").write_bytes(gzip.compress(_idx_bytes(array)))
    (tmp_path / "gz-named.gz").write_bytes(_idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-named"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "gz-named.gz"), array)


def test_truncated_payload(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-10])
    with pytest.raises(DataError, match="is truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    assert "(3, 28, 28)" in str(err.value) and "2352 payload bytes" in str(err.value)
    assert "the file has 2342" in str(err.value)


def test_payload_longer_than_dims(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(_idx_bytes(np.zeros(5, np.uint8)) + b"\0")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0\0", "shorter than the 4-byte IDX header"),
        (b"\0\0\x08\x03\0\0\0\x05", "truncated inside its header: 3 dimensions need 16 bytes"),
        (b"\0\0\x0a\x01\0\0\0\x01\0", "unknown IDX type code 0x0A"),
        (b"\0\0\x08\x00", "declares 0 dimensions"),
    ],
)
def test_bad_headers(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(err.value) == (
        f"{path} is not an IDX file (bad magic 0x504b0304); expected the MNIST IDX format"
    )


def test_gzipped_twice_names_the_gzip_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.compress(_idx_bytes(np.zeros(3, np.uint8)), mtime=0)))
    with pytest.raises(DataError, match=r"not an IDX file \(bad magic 0x1f8b0800\)"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(0)
    packed = gzip.compress(_idx_bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    if damage == "truncate":
        packed = packed[: len(packed) // 2]
    else:
        middle = len(packed) // 2
        packed = (
            packed[:middle]
            + bytes(b ^ 0xFF for b in packed[middle : middle + 8])
            + packed[middle + 8 :]
        )
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(packed)
    with pytest.raises(DataError, match="is a corrupt or truncated gzip file") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "fetch it again" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read .*nope"):
        read_idx(tmp_path / "nope")


def test_write_rejects_dtypes_idx_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot write int64 to IDX file .*convert the array"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
