"""Studies: one question about the methods, answered by named variants of a shared base over seeds
(experiments/studies/*.toml; `ssl-bench study`)."""
