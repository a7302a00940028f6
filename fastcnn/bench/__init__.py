"""The benchmark harness behind ``fastcnn bench``, ``fastcnn profile`` and ``benchmarks/``.

- ``registry``: ``BenchConfig``, ``Case``, ``Skip`` and ``@register_suite``;
- ``suites``: the built-in suites (conv2d, conv_bn_relu, models);
- ``timing``: CUDA-event timing (and a CUDA-event clock for pytest-benchmark);
- ``runner``: runs suites into a report and writes the report folder;
- ``report``: the JSON schema, derived figures, Markdown and ``--compare``;
- ``charts``: PNG charts (Agg); ``peaks``: datasheet peak rates per GPU;
- ``profile``: ``fastcnn profile`` under Nsight Compute / Nsight Systems;
- ``check``: the CPU check ``fastcnn bench`` runs without a GPU;
- ``conv``, ``layers``: conv2d inputs and callables, and the layer shapes.
"""
