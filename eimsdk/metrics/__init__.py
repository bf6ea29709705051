"""Measurements that run unchanged on every backend: disentanglement scores, pixel metrics, pretrained probes.

- :mod:`eimsdk.metrics.disentanglement`: the reader-based DCI-style score and the matrix ``M_ij`` it reads.
- :mod:`eimsdk.metrics.internal`: the reader-free, model-internal response-overlap score.
- :mod:`eimsdk.metrics.pixels`: PSNR and SSIM, optionally outside an edited region.
- :mod:`eimsdk.metrics.pretrained`: CLIP probe reader, CLIP score, DINO and LPIPS from LOCAL weights only.

Formulas: ``docs/metrics.md``.
"""
