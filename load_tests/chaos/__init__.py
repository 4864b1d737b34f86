"""`make chaos`: the suite under load while its broker, database and cache restart and each of
its processes is killed; what every fault cost, measured. ``python -m load_tests.chaos --help``.
"""
