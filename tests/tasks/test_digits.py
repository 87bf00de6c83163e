"""tasks.digits reads scikit-learn's digits file itself, exactly as scikit-learn does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_read_digits_gives_what_load_digits_gives() -> None:
    from sklearn.datasets import load_digits

    from tasks.digits import read_digits

    x, y = read_digits()
    expected_x, expected_y = load_digits(return_X_y=True)
    assert x.shape == (1797, 64) and x.dtype == expected_x.dtype == np.float64
    assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
    assert y.dtype == expected_y.dtype and sorted(set(y.tolist())) == list(range(10))


def test_reading_digits_does_not_import_scikit_learn() -> None:
    code = ("import sys; from tasks.digits import load_digits_data; data = load_digits_data(); "
            "print(len(data.train_x), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1258", "False"]
