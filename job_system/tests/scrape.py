"""Read /metrics the way Prometheus does, for tests."""

from prometheus_client.parser import text_string_to_metric_families

METRICS_TOKEN = "test-metrics-token-0123456789abcdef"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample in a scrape, keyed by (sample name, its labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet, as for a fresh counter."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """GET /metrics through a Django test client holding the test token; fail on non-200."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    return parse(response.content.decode())
