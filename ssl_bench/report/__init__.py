"""Aggregation: comparison tables and plots of run directories."""
