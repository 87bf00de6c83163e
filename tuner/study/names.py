"""Study names: which ones a new study may take, and the folders they map to.

A study's name is free text (spaces, any script, "/"), but three places make a folder of
it: the study's MLflow artifact folder (``<home>/mlartifacts/NAME``), each retrained model
(``<home>/models/NAME-trial-N``) and a benchmark's files (``<home>/benchmarks/NAME``). A
name that a folder can hold as it is keeps that folder, as before; any other (one with a
"/", a model folder's non-ASCII or spaces, one too long for a file name) gets a readable
part and a hash of the whole name, so that "a/b" and "a_b" never share a folder, and the
same name always maps to the same one.
"""

from __future__ import annotations

import hashlib
import re

from tuner.errors import OpttuneError

# MLflow refuses experiment names over 500 characters; a study deleted and created again
# renames its old experiment to "NAME (deleted 1234567890)", 21 characters more.
MAX_NAME_LENGTH = 450
_MAX_FOLDER_BYTES = 200  # of a file system's 255 per name, with room for "-trial-N"
_READABLE = 80  # characters of a hashed folder's readable part


def check_study_name(name: str) -> None:
    """Refuse, before any work, a name that a study cannot take."""
    if len(name) > MAX_NAME_LENGTH:
        raise OpttuneError(f"--study names are at most {MAX_NAME_LENGTH} characters (MLflow's "
                           f"limit for an experiment name, less room to rename it when the "
                           f"study is deleted), but this one has {len(name)}")


def _ascii(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def _hashed(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{_ascii(name)[:_READABLE]}-{digest}"


def artifact_folder(name: str) -> str:
    """The folder of study `name`'s MLflow artifacts under the home's artifact root: the name
    itself where one folder can hold it, else :func:`_hashed`."""
    usable = ("/" not in name and "\\" not in name and name not in (".", "..")
              and len(name.encode("utf-8")) <= _MAX_FOLDER_BYTES)
    return name if usable else _hashed(name)


def folder_name(name: str) -> str:
    """A folder for `name` (a study's model folders, ``NAME-trial-N``; a benchmark's report
    folder): the name itself where it is plain ASCII (letters, digits, ``._-``), else
    :func:`_hashed`."""
    usable = _ascii(name) == name and len(name) <= _MAX_FOLDER_BYTES
    return name if usable else _hashed(name)
