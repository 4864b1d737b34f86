"""Reading what a process exposes at /metrics (the Prometheus text format)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(url: str) -> list[Sample]:
    """Every sample ``url``/metrics exposes now."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` at ``url``/metrics whose labels include ``labels``."""
    matching = (
        sample.value
        for sample in samples(url)
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
    return sum(matching, 0.0)
