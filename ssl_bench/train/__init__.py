"""Pre-training: the shared loop, the optimisers and schedule, the per-epoch monitors."""
