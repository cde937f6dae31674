"""The console's figures: what they draw, and that no text reaches them unescaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from proxy.admin.models import ReliabilityBin
from proxy.admin.svg import curve_svg, reliability_svg

SVG = "{http://www.w3.org/2000/svg}"


def bins(*filled: tuple[int, int, int, float]) -> list[ReliabilityBin]:
    table = {b: (n, c, p) for b, n, c, p in filled}
    return [ReliabilityBin(low=b / 10, high=(b + 1) / 10, decisions=table.get(b, (0,))[0],
                           correct=table[b][1] if b in table else 0,
                           mean_confidence=table[b][2] if b in table else None)
            for b in range(10)]


def test_a_reliability_diagram_draws_one_point_per_labelled_bin() -> None:
    svg = ET.fromstring(reliability_svg(bins((2, 10, 3, 0.25), (9, 30, 27, 0.95)),
                                        title="tenant <a> & b"))
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "tenant <a> & b"  # escaped, parsed back
    circles = svg.findall(f"{SVG}circle")
    assert len(circles) == 2
    description = svg.find(f"{SVG}desc").text
    assert "40 labelled decisions in 2 confidence bins" in description
    assert "30 labelled, 90 % correct" in description
    # The larger bin draws the larger point.
    assert float(circles[1].get("r")) > float(circles[0].get("r"))


def test_an_empty_diagram_says_so() -> None:
    svg = ET.fromstring(reliability_svg(bins(), title="t"))
    assert svg.findall(f"{SVG}circle") == []
    assert "no labels yet" in "".join(svg.itertext())


def test_the_curve_leaves_gaps_where_a_figure_is_undefined() -> None:
    grid = [i / 10 for i in range(10)]
    utility = [0.1, 0.2, None, 0.3, 0.4, math.nan, 0.5, 0.4, 0.3, 0.2]
    svg = ET.fromstring(curve_svg(grid, utility, [1.0] * 10, configured=0.5, simulated=0.3,
                                  optimum=0.6, title="curve"))
    lines = [p for p in svg.findall(f"{SVG}polyline") if p.get("class") == "utility"]
    assert [len(p.get("points").split()) for p in lines] == [2, 2, 4]
    marks = {m.get("class") for m in svg.findall(f"{SVG}line")}
    assert marks == {"mark configured", "mark simulated", "mark optimum"}
