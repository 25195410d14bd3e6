"""Benchmark scenarios; each module's ``run(quick, runs)`` returns Figures."""
