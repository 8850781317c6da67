"""nextbuy's research benchmarks (the lab), apart from the product: the link-prediction race
(`bench linkpred`), the conversion-model study (`bench model`), the delayed-feedback study
(`bench delay`) and the threshold study (`bench thresholds`), with the modules only they use.

Installed beside the package by `make env` (benchmarks/pyproject.toml); each command reaches
`nextbuy bench` through the ``nextbuy.bench`` entry point group. The lab imports the product,
never the other way round. Results: benchmarks/results/ and docs/benchmarks/."""
