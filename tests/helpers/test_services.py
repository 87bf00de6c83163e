"""What CI promises: a missing service fails there and skips elsewhere; `.ci/run` stops when
its PostgreSQL server does not start, instead of running the suite without one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers.services import missing, require_module

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_service_fails_in_ci_and_skips_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI promises this service, but: no db"):
        missing("no db")
    with pytest.raises(ModuleNotFoundError):
        require_module("opttune_no_such_module", "not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no db"):
        missing("no db")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_module("opttune_no_such_module", "not installed")
    with pytest.raises(ModuleNotFoundError):  # a server was given: its driver must be there
        require_module("opttune_no_such_module", "not installed", promised=True)


def test_ci_stops_when_postgres_does_not_start(tmp_path: Path) -> None:
    """`export X="$(cmd)"` hides cmd's failure from `set -e`; .ci/run must assign, then
    export. The same two lines, run with a start that fails, stop the script."""
    code = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in code
    assert not [line for line in code if re.search(r"export \w+=\"?\$\(", line)]
    lines = [line for line in code if "OPTTUNE_TEST_POSTGRES_URL" in line]
    assert lines == ['OPTTUNE_TEST_POSTGRES_URL="$(.ci/postgres.sh start)"',
                     "export OPTTUNE_TEST_POSTGRES_URL"]
    fake = tmp_path / ".ci"
    fake.mkdir()
    (fake / "postgres.sh").write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 1\n")
    (fake / "postgres.sh").chmod(0o755)
    ran = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(lines) +
                          "\necho 'the tests ran'"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 1 and "the tests ran" not in ran.stdout, ran
    assert "cannot start" in ran.stderr
