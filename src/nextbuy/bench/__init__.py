"""Benchmarks: one module per `nextbuy bench <name>`, each with run(out) -> dict."""
