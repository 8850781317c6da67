"""Benchmarks: one module (or package, as faults/) per `nextbuy bench <name>`, each with run(out) -> dict."""
