"""A real search on PostgreSQL whose password is in the storage URL's query leaves that
password nowhere: not in the CLI's output, the Optuna store, the MLflow store, or the home.

The server: $OPTTUNE_TEST_POSTGRES_URL (CI starts one with `.ci/postgres.sh start` and exports
its URL); without it the test is skipped (in CI, it fails). That script's password
("opttune") is also its user and database name, so a leak of it could not be told from the
URL's other parts: the test makes a role of its own with a distinctive password, and a
database that role owns, and drops both afterwards (the script's role may create roles).
Nothing that other tests of the same server use is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from helpers.services import missing, require_module

URL_ENV = "OPTTUNE_TEST_POSTGRES_URL"

# Where a server is promised (CI, or a URL given) a missing driver fails instead of skipping.
require_module("psycopg", "the postgres extra is not installed: pip install -e '.[postgres]'",
               promised=bool(os.environ.get(URL_ENV)))


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        missing(f"no PostgreSQL server: set {URL_ENV} to one (.ci/postgres.sh start)")
    assert url is not None
    return url


@pytest.fixture
def own_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """(the URL of a role and database made for this test, with its password in the query;
    the password). Dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    token = uuid.uuid4().hex[:12]
    # Characters a query value must encode, so that decoding is part of the test.
    secret = f"Rdx{token}@/&:%+ pw"
    name = f"redact_{token[:8]}"
    original = make_url(pg_url)
    plain = original.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as admin:
        can = admin.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user"
                            ).fetchone()
        if not (can and can[0]):
            missing(f"the role of {URL_ENV} may not create roles (ALTER ROLE ... CREATEROLE)")
        role = sql.Identifier(name)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            role, sql.Literal(secret)))
        try:
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
            try:
                url = (original.set(username=name, password=None, database=name, query={})
                       .render_as_string(hide_password=False)
                       + f"?application_name=opttune-redact&password={quote(secret, safe='')}")
                yield url, secret
            finally:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(role))
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def _leaks(text: str | bytes, token: str, forms: set[str]) -> list[str]:
    if isinstance(text, bytes):
        return [f for f in {token, *forms} if f.encode() in text]
    return [f for f in {token, *forms} if f in text]


@pytest.mark.slow
def test_a_search_with_the_password_in_the_query_leaves_it_nowhere(
        own_role: tuple[str, str], home: Path, tmp_path: Path) -> None:
    """Guards every place a store URL reaches: output, study and trial attributes, MLflow
    params and tags, files under the home."""
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from sqlalchemy import text

    from tuner.study.stores import open_storage

    url, secret = own_role
    token = secret[3:15]
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    name = f"redact-{token[:6]}"
    run = subprocess.run(
        [sys.executable, "-m", "tuner", "search", "--task", "digits-mlp", "--study", name,
         "--n-trials", "2", "--epochs", "1", "--device", "cpu", "--optimizers", "adam",
         "--storage", url, "--home", str(home)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "500"})  # no folded URL
    storage = open_storage(url, create=False)
    try:
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert "password=***" in output  # the store's URL is shown, masked
        assert not _leaks(output, token, forms), output
        assert token not in "".join(output.split())  # nor folded over lines

        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) == 2
        system = storage.get_study_system_attrs(storage.get_study_id_from_name(name))
        attrs = [study.user_attrs, system,
                 *({"user": t.user_attrs, "system": t.system_attrs, "params": t.params,
                    "values": t.values, "intermediate": t.intermediate_values}
                   for t in study.trials)]
        assert not _leaks(json.dumps(attrs, default=str), token, forms)
        with storage.engine.connect() as connection:  # every row of every table, to be sure
            tables = connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars()
            for table in list(tables):
                rows = connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
                assert not _leaks("\n".join(rows), token, forms), table

        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        experiments = client.search_experiments(view_type=ViewType.ALL)
        runs = client.search_runs([e.experiment_id for e in experiments],
                                  run_view_type=ViewType.ALL, max_results=1000)
        assert {r.data.tags.get("opttune.role") for r in runs} >= {"study", "trial"}
        logged: list[Any] = [(e.name, e.tags) for e in experiments]
        logged += [(r.info.run_name, r.data.params, r.data.tags) for r in runs]
        assert not _leaks(json.dumps(logged, default=str), token, forms)

        files = [p for p in home.rglob("*") if p.is_file()]
        assert home / "mlflow.db" in files
        assert not [(p, found) for p in files if (found := _leaks(p.read_bytes(), token, forms))]
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass  # the search never made it
        storage.engine.dispose()
