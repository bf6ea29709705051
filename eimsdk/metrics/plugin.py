"""The metrics plugin: registers eimsdk's metrics and its real-image reader the way any plugin does."""

import eimsdk


@eimsdk.hookimpl
def register_metrics(register):
    register("dci", "eimsdk.metrics.disentanglement:DCIDisentanglement",
             description="reader-based DCI-style disentanglement of the edit/reader matrix M_ij")
    register("response-overlap", "eimsdk.metrics.internal:ResponseOverlap",
             description="reader-free score: 1 - mean |cos| between attribute directions' x0 responses")
    register("psnr", "eimsdk.metrics.pixels:PSNR", description="PSNR outside the edited region")
    register("ssim", "eimsdk.metrics.pixels:SSIM", description="SSIM outside the edited region")
    register("clip-score", "eimsdk.metrics.pretrained:ClipScore", description="CLIP score vs target prompt (local weights)")
    register("dino-similarity", "eimsdk.metrics.pretrained:DinoSimilarity",
             description="DINO [CLS] cosine of source and edit (local weights)")
    register("lpips", "eimsdk.metrics.pretrained:LpipsDistance", description="LPIPS of source and edit (lpips package)")


@eimsdk.hookimpl
def register_readers(register):
    register("clip-probe", "eimsdk.metrics.pretrained:ClipProbeReader",
             description="zero-shot CLIP attribute probe from a local model folder")
