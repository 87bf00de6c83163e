"""Where an invocation's stores are (the home folder, the Optuna store's URL, MLflow's
tracking URI) and the one mask for the passwords such URLs carry: plain strings and paths,
no database library, so that every command can name its stores, and mask them in a message,
without loading SQLAlchemy, Optuna or alembic (tuner.study.stores opens them).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "OPTTUNE_HOME"

# Passwords are masked wherever a URL can carry one, as the libraries that read it would:
# - userinfo, read as SQLAlchemy's make_url reads it: the user runs to the first ":" (it may
#   hold "@"), the password from there to the FIRST "@" ("/", ":", "?" and "#" included).
#   A raw "@" in a password (SQLAlchemy cuts it there, HTTP clients split at the last "@")
#   is masked too: the password runs on to the last "@" before a "?", "#" or whitespace.
#   Masking more than one reader sees is harmless. Whitespace ends a URL: redact runs on
#   whole messages.
# - query parameters password=, passwd= (MySQL drivers) and pwd= (ODBC), in any letter case,
#   also "%3D"-encoded (an odbc_connect string), up to the next "&" or whitespace.
# Kept to two plain regexes for speed (redact runs on every message and log line): a scheme
# or key must start a word, so a long run of letters is not retried from each letter.
_USERINFO = re.compile(r"(?<![a-zA-Z0-9+.\-])[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/\s]*:"
                       r"(?P<pw>[^@\s]*(?:@[^@\s?#]*)*)(?=@)")
PASSWORD_PARAM = re.compile(r"(?:(?<![\w.+%\-])|(?<=%3b)|(?<=%26))(?:password|passwd|pwd)(?:=|%3d)"
                    r"(?P<pw>[^&\s]*)", re.IGNORECASE)
_MASK = "***"


def redact(text: str) -> str:
    """Mask every password in `text` (``user:***@host``, ``?password=***``).

    Both patterns are matched on the original text and their spans joined, so a password
    that looks like the other form (``u:a&password=b@host``, ``?password=p@ss``) is masked
    whole whichever reading applies.
    """
    spans = sorted(m.span("pw") for pattern in (_USERINFO, PASSWORD_PARAM)
                   for m in pattern.finditer(text))
    pieces: list[str] = []
    done = -1  # where the last masked span ends
    for start, end in spans:
        if start <= done:  # overlaps the span just masked: extend it
            done = max(done, end)
            continue
        pieces += [text[max(done, 0):start], _MASK]
        done = end
    return "".join(pieces) + text[max(done, 0):]


@dataclass(frozen=True)
class Stores:
    """The resolved locations of one invocation's stores."""

    home: Path
    storage_url: str
    tracking_uri: str
    artifact_root: Path
    tracking_uri_given: bool = False  # --tracking-uri, not the home's own MLflow store

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_path(self.storage_url)


def resolve_stores(*, home: str | Path | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> Stores:
    """`--home`, else $OPTTUNE_HOME, else ./studies; explicit URLs override the defaults."""
    base = Path(home if home is not None else os.environ.get(HOME_ENV) or "studies")
    base = base.expanduser().resolve()
    return Stores(
        home=base,
        storage_url=storage or f"sqlite:///{base / 'opttune.db'}",
        tracking_uri=tracking_uri or f"sqlite:///{base / 'mlflow.db'}",
        artifact_root=base / "mlartifacts",
        tracking_uri_given=tracking_uri is not None,
    )


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        return Path(rest.split("?", 1)[0]) if rest not in ("", ":memory:") else None
    return None


def is_server_url(url: str) -> bool:
    """A database server (PostgreSQL, MySQL): where processes on many machines meet."""
    return sqlite_path(url) is None and not url.startswith("sqlite:")


def driver_url(url: str) -> str:
    """`postgresql://` with the driver the `postgres` extra installs (psycopg 3).

    SQLAlchemy before 2.1 reads a bare postgresql:// as psycopg2, which that extra lacks.
    """
    if url.startswith("postgres://"):  # Heroku's spelling, which SQLAlchemy no longer reads
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url
