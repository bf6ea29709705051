"""Stable Diffusion 3 / 3.5 backend plugin. Registration only: importing it is cheap."""

import eimsdk


@eimsdk.hookimpl
def register_backends(register):
    register("sd3", "eimsdk_sd3.encoder:SD3Encoder", pipeline_classes=("StableDiffusion3Pipeline",),
             description="Stable Diffusion 3 / 3.5 (CLIP x2 + T5, flow matching)")
