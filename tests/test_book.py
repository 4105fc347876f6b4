"""The chapters' helpers: package source shown whole or in parts, and the setup
banner."""

from __future__ import annotations

import pytest

from cvae_helpers.book import setup_chapter, show_source, source_lines
from cvae_helpers.config import RunSpec
from cvae_helpers.training import fit


def test_source_slices_are_the_real_lines():
    whole = source_lines(fit)
    assert whole.startswith("def fit(") and "    return run.finish()" in whole
    part = source_lines(
        fit, start="    for epoch in run.epochs(", stop="    return run.finish()"
    )
    assert (
        part.startswith("    for epoch in run.epochs(") and "run.finish()" not in part
    )
    assert "svi.step(*batch)" in part and part in whole
    assert len(part.splitlines()) < len(whole.splitlines())
    assert (
        source_lines(fit, start="        if run.end_epoch(")
        .rstrip()
        .endswith("return run.finish()")
    )
    code = show_source(
        fit, start="    for epoch in run.epochs(", stop="    return run.finish()"
    )
    assert code.data == part
    # several objects, shown one after the other as one piece
    both = show_source(fit, setup_chapter).data
    assert both == source_lines(fit).rstrip("\n") + "\n\n" + source_lines(setup_chapter)


def test_a_stale_marker_is_an_error():
    with pytest.raises(ValueError, match="is not in the source of fit"):
        source_lines(fit, start="no such line")
    with pytest.raises(ValueError, match="does not follow"):
        source_lines(
            fit, start="    return run.finish()", stop="    for epoch in run.epochs("
        )


def test_setup_chapter_returns_the_run_spec(monkeypatch, capsys):
    monkeypatch.setenv("CVAE_PROFILE", "quick")
    spec = setup_chapter(seed=4)
    assert isinstance(spec, RunSpec) and spec.profile.name == "quick" and spec.seed == 4
    # one line: the budget and what it is for (the quick one warns), the device, the
    # seed
    assert capsys.readouterr().out == (
        "CVAE_PROFILE=quick (smoke test, numbers not meaningful), cpu, seed 4\n"
    )
