"""The metrics plugin: registers eimsdk's edit metrics and its real-image reader the way any plugin does."""

import eimsdk


@eimsdk.hookimpl
def register_metrics(register):
    register("psnr", "eimsdk.metrics.pixels:PSNR", description="PSNR of source and edit, and outside the region")
    register("ssim", "eimsdk.metrics.pixels:SSIM", description="SSIM of source and edit, and outside the region")
    register("clip-score", "eimsdk.metrics.pretrained:ClipScore", description="CLIP score vs target prompt (local weights)")
    register("dino-similarity", "eimsdk.metrics.pretrained:DinoSimilarity",
             description="DINO [CLS] cosine of source and edit (local weights)")
    register("lpips", "eimsdk.metrics.pretrained:LpipsDistance", description="LPIPS, also outside the region (lpips)")


@eimsdk.hookimpl
def register_readers(register):
    register("clip-probe", "eimsdk.metrics.pretrained:ClipProbeReader",
             description="zero-shot CLIP attribute probe from a local model folder")


@eimsdk.hookimpl
def register_commands(register):
    register("overlap", "eimsdk.metrics.overlap_command:overlap_command",
             description="reader-free disentanglement S of several models on the same prompts")
