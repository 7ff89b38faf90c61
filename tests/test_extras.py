"""Optional extras: plotting needs matplotlib, installed by `pip install "kquant[plot]"`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kquant import tradeoffs
from kquant.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def test_plot_extra_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("matplotlib") for d in project["optional-dependencies"]["plot"])
    assert not any("matplotlib" in d for d in project["dependencies"])  # `pip install kquant` stays NumPy-only


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert cli_main(["tradeoffs", "--plot", str(tmp_path / "x.png")]) == 2
    assert 'pip install "kquant[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ImportError, match=r'pip install "kquant\[plot\]"'):
        tradeoffs.plot([], str(tmp_path / "y.png"))
