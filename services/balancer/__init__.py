"""Balancer (8090): a metrics-aware proxy in front of the edges, with a live dashboard."""
