"""Performance measurement: `ssl-bench bench` and peak-memory probes."""
