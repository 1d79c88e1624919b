"""Applications built on the library: the live run, offline render, and the benchmarks."""
