"""`make analysis`: the trade-offs users of the platform choose between, measured here.

Each experiment is a module of this package, runnable alone (``python -m
load_tests.analysis.<name> --help``); ``python -m load_tests.analysis`` runs them all, each in
a process of its own, and regenerates docs/ANALYSIS.md from their JSON.
"""
