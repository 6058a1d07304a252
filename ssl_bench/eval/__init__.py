"""Evaluation of a frozen backbone: linear probe and kNN on cached features."""
