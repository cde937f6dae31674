"""The policy simulation's figure (``policy simulate --plot``, the risk card): its legend lies
outside the curves, and every text inside the figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from policies.simulate import Candidate, ReplayData, simulate
from proxy.analysis.policy_simulate import simulation_figure


def test_the_legend_is_below_both_panels_and_inside_the_figure() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=400)
    correct = rng.uniform(size=400) < p
    configured = Candidate("configured", 0.6, 1.5, 0.0, "configured")
    replay = ReplayData.from_lists(p.tolist(), [False] * 400, correct.astype(float).tolist(),
                                   [str(i) for i in range(400)])
    sim = simulate(replay, [configured], reference=configured, bootstrap=0)
    fig = simulation_figure(sim, title="a title")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        (legend,) = fig.legends
        assert not [axes.legend_ for axes in fig.axes if axes.legend_ is not None]
        box = legend.get_window_extent(renderer)
        for axes in fig.axes:
            assert box.y1 <= axes.get_window_extent(renderer).y0  # below, not over, the curves
        labels = [t.get_text() for t in legend.get_texts()]
        assert "configured 0.600" in labels and any("over-abstention" in x for x in labels)
        drawn, page = fig.get_tightbbox(renderer), fig.bbox_inches
        assert page.x0 <= drawn.x0 and drawn.x1 <= page.x1
        assert page.y0 <= drawn.y0 and drawn.y1 <= page.y1
    finally:
        plt.close(fig)
