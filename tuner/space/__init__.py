"""The search space: optimizer families, the range DSL, space files, and one trial's config.

Pure Python (no torch, no Optuna at import), so that the CLI can show and check a space
instantly. Modules: ``families`` (what each optimizer tunes), ``dsl`` (``LOW:HIGH``, ``a,b``,
``family=``), ``searchspace`` (:class:`Space`, resolved from flags and files), ``files``
(TOML/YAML space files), ``diff`` (what changed between two spaces), ``config``
(:class:`TrialConfig`, what one trial trains with).
"""

from __future__ import annotations

from tuner.space.config import TrialConfig
from tuner.space.searchspace import ParamSpace, Space, build_space

__all__ = ["ParamSpace", "Space", "TrialConfig", "build_space"]
