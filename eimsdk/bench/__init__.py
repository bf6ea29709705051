"""The editing benchmark: JSONL manifests, a resumable (and ``accelerate``-parallel) runner, reports.

- :mod:`eimsdk.bench.manifest`: the manifest format (one edit task per line) and edited-region masks.
- :mod:`eimsdk.bench.toy`: the toy-world manifest generator (every scene edited along every attribute).
- :mod:`eimsdk.bench.pie`: a loader for PIE-Bench's ``mapping_file.json``.
- :mod:`eimsdk.bench.runner`: runs models x methods x items, one atomic JSON per item.
- :mod:`eimsdk.bench.report`: Markdown + JSON summaries and PNG plots.
- :mod:`eimsdk.bench.cli`: ``eimsdk bench``.

Usage: ``docs/benchmark.md``.
"""
