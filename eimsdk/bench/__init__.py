"""The editing benchmark: JSONL manifests, a resumable (and ``accelerate``-parallel) runner, reports.

- :mod:`eimsdk.bench.manifest`: the manifest format (one edit task per line), edited-region masks, and the
  manifest sources plugins register (``toy:SCENES``).
- :mod:`eimsdk.bench.pie`: a loader for PIE-Bench's ``mapping_file.json``.
- :mod:`eimsdk.bench.runner`: runs models x methods x items, one atomic JSON per item.
- :mod:`eimsdk.bench.report`: Markdown + JSON summaries and PNG plots.
- :mod:`eimsdk.bench.cli`: ``eimsdk bench``.

Usage: ``docs/benchmark.md``.
"""
