"""Reading a space file (TOML, or YAML) into the same values the command-line flags give.

    optimizers = ["sgd", "adam"]
    epochs = 3
    batch_size = [64, 128]        # a list is a choice, a number fixes it
    lr = "1e-5:1e-1"              # the command line's DSL, or a table {low, high, log}
    [adam]                        # a table named after a family scopes what is in it
    lr = "1e-5:1e-2"
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from tuner.errors import SpaceError
from tuner.space.families import ALL_PARAM_NAMES, FAMILIES
from tuner.space.searchspace import SpaceFileValues

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = ("optimizers", "epochs", "batch_size", "scheduler")


def load_space_file(path: Path) -> SpaceFileValues:
    """Parse `path` into ``{"optimizers", "epochs", "batch_size", "scheduler", "params"}``."""
    if not path.is_file():
        raise SpaceError(f"space file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    raw = _parse(path, text)
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: the space file must be a table of keys, but got "
                         f"{type(raw).__name__}")
    params: dict[str, list[str]] = {}
    out = SpaceFileValues(params=params)
    for key, value in raw.items():
        where = f"{path}: {key}"
        if key == "optimizers":
            out["optimizers"] = _word_list(where, value)
        elif key == "epochs":
            if not isinstance(value, int) or isinstance(value, bool):
                raise SpaceError(f"{where} must be an integer, but got {value!r}")
            out["epochs"] = value
        elif key == "batch_size":
            out["batch_size"] = _as_dsl(where, value)
        elif key == "scheduler":
            out["scheduler"] = _as_dsl(where, value)
        elif key in ALL_PARAM_NAMES and not _is_family_table(key, value):
            params.setdefault(key, []).append(_as_dsl(where, value))
        elif key in FAMILIES:
            if not isinstance(value, dict):
                raise SpaceError(f"{where} must be a table of that family's hyperparameters, "
                                 f"but got {value!r}")
            for pname, pvalue in value.items():
                if pname not in ALL_PARAM_NAMES:
                    raise SpaceError(f"{where}.{pname}: unknown hyperparameter; known: "
                                     f"{', '.join(ALL_PARAM_NAMES)}")
                spec = _as_dsl(f"{where}.{pname}", pvalue)
                params.setdefault(pname, []).append(f"{key}={spec}")
        else:
            known = ", ".join([*TOP_KEYS, *ALL_PARAM_NAMES, *FAMILIES])
            raise SpaceError(f"{path}: unknown key {key!r}; known keys: {known}")
    return out


def _is_family_table(key: str, value: object) -> bool:
    """`momentum` is a family and a hyperparameter; a table of hyperparameters means the family."""
    return key in FAMILIES and isinstance(value, dict) and not set(value) & {"low", "high", "log"}


def _parse(path: Path, text: str) -> object:
    """The file's tables, lists, strings, numbers, booleans, dates (TOML) and nulls (YAML);
    the readers narrow them with isinstance."""
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            parsed: object = yaml.load(text, Loader=_Loader)  # a SafeLoader
        except yaml.YAMLError as exc:
            raise SpaceError(f"{path} is not valid YAML: {_one_line(exc)}") from None
        return parsed
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{path} is not valid TOML: {exc}") from None


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships without type hints
    """PyYAML's safe loader, but reading ``1e-5`` as a number (YAML 1.2), not as a string
    (PyYAML's YAML 1.1 wants ``1.0e-5``): else ``{low: 1e-5, high: 1e-2}`` is refused."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _one_line(exc: Exception) -> str:
    """PyYAML's message without its multi-line snippet of the file."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(exc, "context", None)
        return (f"{context}: " if context else "") + \
            f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _word_list(where: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise SpaceError(f"{where} must be a list of family names, but got {value!r}")


def _as_dsl(where: str, value: object) -> str:
    """Turn a TOML/YAML value into the DSL string the flags use."""
    if isinstance(value, bool):
        raise SpaceError(f"{where} must be a number, a string or a list, but got {value!r}")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        extra = set(value) - {"low", "high", "log"}
        if extra or not {"low", "high"} <= set(value):
            raise SpaceError(f"{where} as a table needs low and high (and optionally log), "
                             f"but got keys {sorted(value)}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SpaceError(f"{where}: low and high must be numbers, but got {value!r}")
        scale = "" if "log" not in value else (":log" if value["log"] else ":linear")
        return f"{low}:{high}{scale}"
    raise SpaceError(f"{where} must be a number, a string, a list or a table, but got {value!r}")
