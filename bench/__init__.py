"""VitalWatch benchmarks: run with ``python -m bench`` (or ``make bench``); never part of the tests.

Each benchmark is a module with ``main() -> None`` listed in :mod:`bench.__main__`; it prints
a text table and writes its numbers to ``bench/results/<name>.json`` so runs on different
machines (a Raspberry Pi at the chair, a CI runner) can be compared.
"""
