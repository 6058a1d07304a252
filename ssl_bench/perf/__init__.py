"""Performance measurement: `ssl-bench bench` and peak-memory probes.

``cli`` (parser and command), ``settings``, ``runner`` (one run), ``step`` (harness vs bare
training step), ``pipeline`` (loader vs per-sample PIL), ``folder`` (folder loader vs
ImageFolder + transforms on ImageNet-like JPEGs), ``load`` (the training step beside a busy
core), ``losses``, ``report`` (targets, tables, JSON, CSV), ``timing``, ``machine``,
``synthetic`` and ``memory`` (the peak-memory probe the trainer also uses). See
:mod:`ssl_bench.perf.cli` for what the benchmark measures.
"""
