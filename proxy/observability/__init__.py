"""Metrics (Prometheus), the metrics key, time to first token, and the gateway's logging."""
