"""Backbones in and out of ssl-bench: evaluating a checkpoint trained elsewhere, exporting a run's.

- ``external``: a state dict file (torchvision, timm, the official VICReg / Barlow Twins layouts)
  or a run directory, read and fitted to an ssl-bench backbone (``ssl-bench eval``);
- ``export``: a run's backbone as a safetensors file that torchvision or timm load strictly
  (``ssl-bench export``);
- ``model_card``: what travels with an export (method, recipe, data, evaluation, provenance).
"""
