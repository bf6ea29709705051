"""Stable Diffusion 1.x / 2.x and XL backend plugin (UNet families). Registration only: importing it is cheap."""

import eimsdk


@eimsdk.hookimpl
def register_backends(register):
    register("sd", "eimsdk_sd.encoder:SDEncoder", pipeline_classes=("StableDiffusionPipeline",),
             description="Stable Diffusion 1.x / 2.x (CLIP, UNet, DDPM eps or v)")
    register("sdxl", "eimsdk_sd.encoder:SDXLEncoder", pipeline_classes=("StableDiffusionXLPipeline",),
             description="Stable Diffusion XL (two CLIPs + pooled, UNet with size conditions)")
