"""Plots of a real study: valid HTML and PNG files for every kind, and the search-end artifact."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers.small_study import small_study_copy

from tuner.errors import OpttuneError
from tuner.results import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_home(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Path:
    """Study s1: sgd and adam, 6 trials of 2 epochs (see small_study.py)."""
    return small_study_copy(tmp_path_factory, _mlflow_template, "plots")


@pytest.mark.slow
@pytest.mark.parametrize("kind", plots.KINDS)
def test_every_kind_as_html_and_png(study_home: Path, tmp_path: Path, kind: str) -> None:
    html = plots.write_plot("s1", kind=kind, output=tmp_path / f"{kind}.html", home=study_home)
    assert (html.kind, html.format) == (kind, "html")
    text = html.path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "plotly" in text.lower() and "s1: " in text  # plotly.js inline; titled by study
    png = plots.write_plot("s1", kind=kind, output=tmp_path / f"{kind}.png", home=study_home)
    data = png.path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


def test_curves_are_the_best_trial_of_each_family(study_home: Path) -> None:
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{study_home / 'opttune.db'}")
    curves = {label.split(" ")[0]: (label, values) for label, _, values in
              plots.best_curves(study)}
    assert set(curves) == {"sgd", "adam"}
    for family, (label, values) in curves.items():
        complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"
                    and t.params["optimizer"] == family]
        best = max(complete, key=lambda t: t.value)
        assert label == f"{family} (trial {best.number})"
        assert values == [best.intermediate_values[k] for k in sorted(best.intermediate_values)]


def test_the_search_logged_its_plots_on_the_parent_run(study_home: Path) -> None:
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{study_home / 'opttune.db'}")
    client = MlflowClient(tracking_uri=f"sqlite:///{study_home / 'mlflow.db'}")
    parent = study.user_attrs["mlflow"]["parent_run_id"]
    assert [a.path for a in client.list_artifacts(parent, "plots")] == \
        ["plots/study_plots.html"]
    page = Path(client.download_artifacts(parent, "plots/study_plots.html")).read_text()
    assert page.count("plotly.js v") == 1  # one copy of plotly.js for all the charts
    for title in ("Optimization History Plot", "Validation curves", "Parallel Coordinate",
                  "Slice Plot"):
        assert title in page


def test_clear_errors(study_home: Path, tmp_path: Path) -> None:
    with pytest.raises(OpttuneError, match=r"-o must end in .html .* but got 'x.jpg'"):
        plots.write_plot("s1", kind="history", output="x.jpg", home=study_home)
    with pytest.raises(OpttuneError, match="--params colour: .* they have .*lr"):
        plots.write_plot("s1", kind="slice", output=tmp_path / "s.html", params=["colour"],
                         home=study_home)
    # A study with one complete trial has no parameter importances to show.
    tiny = optuna.create_study(study_name="tiny",
                               storage=f"sqlite:///{study_home / 'opttune.db'}")
    tiny.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(OpttuneError, match="needs at least 2 complete trials, but study "
                                           "'tiny' has 1"):
        plots.write_plot("tiny", kind="importance", output=tmp_path / "i.png", home=study_home)
    assert not (tmp_path / "i.png").exists()
