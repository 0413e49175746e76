"""fedge benchmarks: each writes ``bench/results/<name>.json`` with machine and commit."""
