"""Progress bars stay out of logs; plots leave matplotlib's global state alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from streamgenre.progress import progress_bar


def test_bars_are_off_when_stderr_is_not_a_terminal(capsys):
    bar = progress_bar(range(3), total=3, desc="work", unit="clip")  # pytest's captured stderr is no terminal
    assert bar.disable and list(bar) == [0, 1, 2]
    bar.set_postfix(loss="0.1")  # a disabled bar still takes every call
    assert capsys.readouterr().err == ""


def test_plotting_leaves_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    code = textwrap.dedent(f"""
        import sys, matplotlib
        matplotlib.use("svg")
        import streamgenre.train
        from pathlib import Path
        from streamgenre.plots import plot_curves
        plot_curves([{{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}}], "loss", Path({str(tmp_path / "loss.png")!r}))
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["svg", "False"]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
