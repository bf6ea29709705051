"""Stable Diffusion 1.x / 2.x backend plugin (a UNet family). Registration only: importing it is cheap."""

import eimsdk


@eimsdk.hookimpl
def register_backends(register):
    register("sd", "eimsdk_sd.encoder:SDEncoder", pipeline_classes=("StableDiffusionPipeline",),
             description="Stable Diffusion 1.x / 2.x (CLIP, UNet, DDPM eps or v)")
