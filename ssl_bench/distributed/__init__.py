"""Multi-process training: collectives that carry gradients, process groups and DDP."""
