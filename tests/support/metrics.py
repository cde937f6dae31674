"""A gateway's ``GET /metrics``, parsed: samples keyed by name and sorted labels."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "scrape", "value"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample ``url/metrics`` exposes (a gateway without a metrics key)."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` in ``samples``, 0 if absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
