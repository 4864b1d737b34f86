"""Redirector: the ratio balancer answering viewers with a 302 to the CDN or the origin."""
