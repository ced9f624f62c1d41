"""asv benchmarks: thin classes over the installed `suite` package's registry and timing core."""
