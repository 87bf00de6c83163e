"""tuner.study.locations.redact: a password never shows, in any form a URL can carry it.

Userinfo (``user:pw@host``, read as SQLAlchemy reads it), ``password=``/``passwd=``/``pwd=``
query parameters in any letter case, URL-encoded values; in a bare URL and in free text.
Then the places a URL's password could slip out around it: library error text wrapped in our
errors, CLI errors and notes, a trial's fail reason, the MLflow process's answers.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from urllib.parse import quote

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.cli.commands import cli, user_errors
from tuner.errors import OpttuneError, StoreError
from tuner.study.locations import redact
from tuner.study.stores import check_password_encoded

# -- generated URLs ----------------------------------------------------------------------------
SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+pymysql", "sqlite", "http", "https"]
KEYS = ["password", "passwd", "pwd"]
# Markers at both ends of every password: upper case and digits, so that no scheme, user,
# host, db name or key drawn below (lower case, or a key in mixed case) can hold them, and a
# leak of either end of the password is seen.
HEAD, TAIL = "QZ7", "JX9"
# Printable ASCII (space and every special character) and a few non-ASCII letters.
_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("äé€ß")
# A password that spells a key ("…&pwd=…") is a password redact rightly masks from there on,
# past the host: it would defeat the exact comparison below, so none is drawn.
PASSWORDS = st.text(_CHARS, min_size=6, max_size=24).filter(
    lambda s: not re.search(r"pwd|passw", s, re.IGNORECASE)).map(lambda s: HEAD + s + TAIL)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{2,8}", fullmatch=True)
HOSTS = (st.from_regex(r"[a-z][a-z0-9-]{2,10}(\.[a-z]{2,4}){0,2}", fullmatch=True)
         | st.from_regex(r"10\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
OTHER_PARAMS = st.tuples(st.sampled_from(["sslmode", "connect_timeout", "application_name",
                                          "charset", "options"]),
                         st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True))
# Characters each place may keep raw (all others are %-encoded, as quote() does): SQLAlchemy
# reads the password up to the first "@", so "/", ":", "?" and "#" may stay raw in userinfo;
# a query value must encode "&", "#", "+", "%", "@" and whitespace.
USERINFO_SAFE = ["", "!$&'()*+,;=:~", "!$&'()*+,;=:~/?#"]
QUERY_SAFE = ["", "!$'()*,;:~", "!$'()*,;:~/?="]


def _any_case(key: str) -> st.SearchStrategy[str]:
    return st.tuples(*[st.sampled_from([c.lower(), c.upper()]) for c in key]).map("".join)


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    """(url, the url as redact must write it, password, host, db): the password in the
    userinfo and/or in one or several query parameters, among other parameters."""
    scheme, user, host, db = draw(st.sampled_from(SCHEMES)), draw(NAMES), draw(HOSTS), draw(NAMES)
    password = draw(PASSWORDS)
    port = draw(st.none() | st.integers(1, 65535))
    in_userinfo = draw(st.booleans())
    keys = draw(st.lists(st.sampled_from(KEYS).flatmap(_any_case),
                         min_size=0 if in_userinfo else 1, max_size=3))
    params: list[tuple[str, str | None]] = [(k, None) for k in keys]  # None: the password
    params += draw(st.lists(OTHER_PARAMS, max_size=3))
    params = draw(st.permutations(params))

    def url(secret: str | None) -> str:
        """The URL with each password encoded as drawn, or with `secret` in its place."""
        def pw(safe: str) -> str:
            return secret if secret is not None else quote(password, safe=safe)

        userinfo = f"{user}:{pw(draw(st.sampled_from(USERINFO_SAFE)))}" if in_userinfo else user
        query = "&".join(f"{k}={pw(draw(st.sampled_from(QUERY_SAFE))) if v is None else v}"
                         for k, v in params)
        netloc = f"{host}:{port}" if port is not None else host
        return f"{scheme}://{userinfo}@{netloc}/{db}" + (f"?{query}" if query else "")

    return url(None), url("***"), password, host, db


def _secret_forms(password: str) -> set[str]:
    """The password as it may show: raw, and %-encoded as any place may encode it."""
    return {password, *(quote(password, safe=s) for s in USERINFO_SAFE + QUERY_SAFE)}


@settings(max_examples=300, deadline=None)
@given(urls())
def test_redact_masks_every_generated_password(case: tuple[str, str, str, str, str]) -> None:
    """Guards every form at once: userinfo and repeated query parameters in any case, with
    special and encoded characters; the rest of the URL stays as it was."""
    url, masked, password, host, db = case
    for text, expected in ((url, masked),
                           (f"some message about {url} here",
                            f"some message about {masked} here")):
        out = redact(text)
        assert out == expected
        assert HEAD not in out and TAIL not in out
        assert not any(form in out for form in _secret_forms(password))
        assert host in out and f"/{db}" in out
        assert redact(out) == out  # masked once is masked for good


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SCHEMES), NAMES, HOSTS, st.none() | st.integers(1, 65535), NAMES,
       st.lists(OTHER_PARAMS, max_size=3))
def test_redact_leaves_urls_without_a_password_alone(
        scheme: str, user: str, host: str, port: int | None, db: str,
        params: list[tuple[str, str]]) -> None:
    """No over-masking: a user, a port and other parameters are not a password."""
    query = "&".join(f"{k}={v}" for k, v in params)
    url = (f"{scheme}://{user}@{host}" + (f":{port}" if port is not None else "")
           + f"/{db}" + (f"?{query}" if query else ""))
    assert redact(url) == url
    assert redact(f"cannot open {url}: refused") == f"cannot open {url}: refused"


# -- the forms, one by one ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # the issue: a password in the query
        ("postgresql://u@127.0.0.1:1/db?password=s3cret-pw",
         "postgresql://u@127.0.0.1:1/db?password=***"),
        ("postgresql://u@h/db?PASSWORD=s3cret&Password=s3cret2&sslmode=disable",
         "postgresql://u@h/db?PASSWORD=***&Password=***&sslmode=disable"),
        ("mysql+pymysql://u@h/db?charset=utf8&passwd=s3cret", "mysql+pymysql://u@h/db?charset=utf8&passwd=***"),
        ("postgresql://u@h/db?password=s3%40cr%26et%2Fx&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BUID%3Du%3BPWD%3Ds3cret",
         "mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BUID%3Du%3BPWD%3D***"),
        # userinfo as SQLAlchemy's make_url reads it: the user may hold "@", the password
        # runs to the "@" ("/", ":", "?", "#" included) ...
        ("postgresql://me@corp:s3cret@h/db", "postgresql://me@corp:***@h/db"),
        ("postgresql://u:s3/cr:e?t#x@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:s3cr%40et@h/db", "postgresql://u:***@h/db"),
        # ... and a raw "@" in it (SQLAlchemy cuts there, HTTP at the last "@") is masked too
        ("postgresql://u:s3@cret@h/db", "postgresql://u:***@h/db"),
        ("https://u:s3@cr/et@mlflow.example:443/x?y=a@b", "https://u:***@mlflow.example:443/x?y=a@b"),
        # both forms in one URL, and a password that looks like the other form
        ("postgresql://u:s3cret@h/db?password=s3cret", "postgresql://u:***@h/db?password=***"),
        ("postgresql://u:a&password=s3cret@h/db", "postgresql://u:***"),
        ("postgresql://u@h:5432/db?password=s3@cret", "postgresql://u@h:***"),
        # free text: several URLs, the key=value form of a libpq conninfo
        ("a postgresql://a:s3cret@h/d and http://b@h:80/m?pwd=s3cret2; retrying",
         "a postgresql://a:***@h/d and http://b@h:80/m?pwd=*** retrying"),
        ("host=h user=u password=s3cret dbname=d", "host=h user=u password=*** dbname=d"),
    ],
)
def test_redact_forms(text: str, masked: str) -> None:
    """Each form a password can take, masked as `user:***@host` or `password=***`."""
    assert redact(text) == masked
    assert "s3" not in redact(text)


@pytest.mark.parametrize(
    "text",
    ["sqlite:////tmp/x/opttune.db?timeout=5", "postgresql://user@host:5432/db?sslmode=require",
     "mypassword=x is not a key", "lr=0.001 at 12:30", "no url here: a:b@c",
     "http://host:5000/path", "file:///tmp/mlruns", "a@b.c:pw@x"],
)
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_is_fast_on_long_text() -> None:
    """redact runs on every message and log line: a long line of letters, keys and URLs
    without passwords costs milliseconds, not a retry from each letter."""
    import time

    line = ("x" * 100_000 + " ") + "password " * 10_000 + "http://h:80/p " * 5_000
    began = time.perf_counter()
    assert redact(line) == line
    assert time.perf_counter() - began < 1.0


# -- the places around redact ------------------------------------------------------------------
def test_a_raw_at_in_a_password_is_refused_before_a_driver_names_its_tail() -> None:
    """SQLAlchemy ends the password at the first "@"; the driver would then report the rest
    as the host ("failed to resolve host 'hunter2@h'"), unmasked."""
    with pytest.raises(StoreError) as info:
        check_password_encoded("postgresql://u:s3cret@hunter2@h:5432/db")
    assert "s3cret" not in str(info.value) and "hunter2" not in str(info.value)
    assert "postgresql://u:***@h:5432/db" in str(info.value)
    assert "%40" in str(info.value)
    with pytest.raises(StoreError) as info:  # read as user "u@h", host "hunter2"
        check_password_encoded("postgresql://u@h:5432/db?password=s3cret@hunter2")
    assert "s3cret" not in str(info.value) and "hunter2" not in str(info.value)
    check_password_encoded("postgresql://u:s3cret%40hunter2@h:5432/db")  # encoded: fine
    check_password_encoded("postgresql://u@h:5432/db?password=s3cret%40hunter2")
    check_password_encoded("postgresql://u@h/db?password=s3cret@hunter2")  # read whole
    check_password_encoded("postgresql://me@corp:s3cret@h/db?application_name=a@b")  # Azure
    check_password_encoded("not a url")


def test_cli_errors_are_masked_whatever_wrapped_them() -> None:
    """The last line of defence: an error's text is masked where the CLI prints it."""
    with pytest.raises(click.ClickException) as info, user_errors():
        raise OpttuneError("the store said: postgresql://u@h/db?password=s3cret failed")
    assert info.value.message == "the store said: postgresql://u@h/db?password=*** failed"


def test_a_trials_fail_reason_is_masked() -> None:
    """The reason is stored: a trial attribute and an MLflow tag."""
    from tuner.search.trial_steps import ending_of

    ending = ending_of(RuntimeError("could not reach http://u:s3cret@mlflow:5000/api\nmore"))
    assert ending.state == "FAIL"
    assert ending.reason == "RuntimeError: could not reach http://u:***@mlflow:5000/api"


def test_the_mlflow_process_answers_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error raised in the MLflow process crosses to the search masked (MLflow's REST
    errors quote the request URL, userinfo and all)."""
    from tuner.study import tracker_process

    class Failing:
        def __init__(self, *args: object) -> None:
            raise RuntimeError("API request to http://u:s3cret@mlflow:5000/api/2.0 failed")

    monkeypatch.setattr(tracker_process, "preload", lambda: None)  # no MLflow import here
    monkeypatch.setattr(tracker_process, "Tracker", Failing)
    requests = io.BytesIO(pickle.dumps(("open", ("http://u:s3cret@mlflow:5000", Path(".")), {})))
    answers = io.BytesIO()
    tracker_process._serve(requests, answers)
    ok, (kind, text) = pickle.loads(answers.getvalue())
    assert (ok, kind) == (False, "RuntimeError")
    assert text == "API request to http://u:***@mlflow:5000/api/2.0 failed"


@pytest.mark.parametrize("stored", ["http://u:***@mlflow:5000",
                                    "postgresql://u@h/mlflow?password=***",
                                    "postgresql://u@h/mlflow?sslmode=require&PASSWD=***"])
def test_a_stored_masked_tracking_uri_asks_for_the_real_one(stored: str) -> None:
    """A study keeps its tracking URI masked; resume then asks for it, in every form."""
    from tuner.space import build_space
    from tuner.study.meta import StudyMeta, study_tracking_uri
    from tuner.study.settings import MlflowIds, StudySettings

    meta = StudyMeta(task="t", space=build_space(optimizers=["adam"]),
                     data_source="d", metric="m", direction="maximize",
                     settings=StudySettings(),
                     mlflow=MlflowIds(tracking_uri=stored, tracking_uri_given=True))
    with pytest.raises(StoreError, match="whose password is not stored; give it with "
                                         "--tracking-uri"):
        study_tracking_uri("s", meta, None)


# -- the CLI, end to end -----------------------------------------------------------------------
SECRET = "s3cret-pw"


def _assert_one_error_without(result: Result, *secrets: str) -> None:
    output = result.output
    assert result.exit_code != 0, output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.startswith("Error:")]) == 1, output
    assert not any(s in output for s in secrets), output
    assert "***" in output, output  # the URL is shown, masked


@pytest.mark.parametrize("storage", [
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}",  # the issue
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    f"postgresql://u@127.0.0.1:1/db?sslmode=disable&PASSWORD={SECRET}",
    f"postgresql://u:{SECRET}@hunter2@127.0.0.1:1/db",  # a raw "@": refused, its tail unshown
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}@hunter2",
])
def test_resume_on_an_unreachable_store_never_shows_the_password(tmp_path: Path,
                                                                 storage: str) -> None:
    """`opttune resume x --storage URL` (nothing listens on port 1): one `Error:` line, the
    URL masked, the password nowhere."""
    result = CliRunner().invoke(cli, ["resume", "x", "--storage", storage,
                                      "--home", str(tmp_path / "home")])
    _assert_one_error_without(result, SECRET, "hunter2")


def test_search_on_an_unreachable_tracking_store_never_shows_the_password(
        tmp_path: Path) -> None:
    """The MLflow store is probed before any trial: its error masks the query password."""
    result = CliRunner().invoke(cli, [
        "search", "--task", "digits-mlp", "--n-trials", "1", "--epochs", "1", "--device", "cpu",
        "--optimizers", "adam", "--home", str(tmp_path / "home"),
        "--tracking-uri", f"postgresql://u@127.0.0.1:1/mlflow?Password={SECRET}"])
    _assert_one_error_without(result, SECRET)
