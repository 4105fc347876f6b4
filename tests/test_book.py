"""The chapters' helpers: package source shown whole or in parts, and the setup banner."""

from __future__ import annotations

import pytest

from cvae_helpers.book import setup_chapter, show_source, source_lines
from cvae_helpers.config import RunSpec
from cvae_helpers.training import fit


def test_source_slices_are_the_real_lines():
    whole = source_lines(fit)
    assert whole.startswith("def fit(") and "return FitResult" in whole
    part = source_lines(fit, start="    epochs = tqdm(", stop="    epochs.close()")
    assert part.startswith("    epochs = tqdm(") and "epochs.close()" not in part
    assert part in whole and len(part.splitlines()) < len(whole.splitlines())
    assert source_lines(fit, start="    module.load_state_dict(state.best_state)").rstrip().endswith(
        "reused=False)")
    code = show_source(fit, start="    epochs = tqdm(", stop="    epochs.close()")
    assert code.data == part


def test_a_stale_marker_is_an_error():
    with pytest.raises(ValueError, match="is not in the source of fit"):
        source_lines(fit, start="no such line")
    with pytest.raises(ValueError, match="does not follow"):
        source_lines(fit, start="    epochs.close()", stop="    epochs = tqdm(")


def test_setup_chapter_returns_the_run_spec(monkeypatch, capsys):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    spec = setup_chapter(seed=4)
    assert isinstance(spec, RunSpec) and spec.profile.name == "quick" and spec.seed == 4
    out = capsys.readouterr().out
    assert "Budget: quick (CVAE_PROFILE=quick)" in out and "NOT the paper's" in out
    assert "Device: cpu. Seed: 4." in out
