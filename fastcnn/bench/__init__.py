"""The benchmark harness behind ``fastcnn bench`` and ``benchmarks/``."""
