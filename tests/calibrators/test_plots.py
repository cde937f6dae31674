"""Report figures keep every label on the figure, however long a calibrator's name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from calibrators.plots import (
    plot_reliability,
    plot_utility_curve,
    reliability_figure,
    utility_figure,
)

LONG_NAME = ("calibrated out-of-fold: binned_logistic(token_prob, min_token_prob, "
             "mean_topk_margin, token_count, mean_topk_entropy)")


def confidences() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    return {"raw token_prob": p, LONG_NAME: p**1.5}, rng.uniform(size=500) < p**1.5


@pytest.mark.parametrize("build", [reliability_figure, utility_figure])
def test_every_text_lies_inside_the_figure(build: Callable[..., Figure]) -> None:
    conf, correct = confidences()
    fig = build(conf, correct, title="rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible()]
        assert any("binned_logistic" in text for text in texts)
        # Everything drawn (titles, labels, tick labels, the legend), in inches, against the
        # figure's own size: what savefig keeps.
        drawn, page = fig.get_tightbbox(renderer), fig.bbox_inches
        assert page.x0 <= drawn.x0 and drawn.x1 <= page.x1, (drawn, page)
        assert page.y0 <= drawn.y0 and drawn.y1 <= page.y1, (drawn, page)
    finally:
        plt.close(fig)


def test_the_files_are_written(tmp_path: Path) -> None:
    conf, correct = confidences()
    plot_reliability(conf, correct, tmp_path / "r.png", title="t")
    plot_utility_curve(conf, correct, tmp_path / "u.png", title="t")
    for name in ("r.png", "u.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.get_fignums()  # closed, not accumulating across a report's files


def test_the_reliability_diagram_counts_the_answers_in_each_bin() -> None:
    """Each curve's bins are bars under the diagram, labelled with their counts."""
    from matplotlib.container import BarContainer

    from calibrators.metrics import reliability_bins

    conf, correct = confidences()
    fig = reliability_figure(conf, correct, title="t")
    try:
        _, counts = fig.axes
        assert counts.get_ylabel() == "answers per bin"
        bars = [c for c in counts.containers if isinstance(c, BarContainer)]
        assert len(bars) == len(conf)
        for container, p in zip(bars, conf.values(), strict=True):
            expected = reliability_bins(p, correct, n_bins=10).count
            assert [int(bar.get_height()) for bar in container] == expected.tolist()
        written = sorted(t.get_text() for t in counts.texts if t.get_text())
        every = [str(int(n)) for p in conf.values()
                 for n in reliability_bins(p, correct, n_bins=10).count if n]
        assert written == sorted(every)
    finally:
        plt.close(fig)
