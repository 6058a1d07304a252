"""The run layer: one run's life (build, pre-train, evaluate) and its records on disk."""
