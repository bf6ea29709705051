"""FLUX.1 backend plugin (dev and schnell). Registration only: importing it is cheap."""

import eimsdk


@eimsdk.hookimpl
def register_backends(register):
    register("flux", "eimsdk_flux.encoder:FluxEncoder", pipeline_classes=("FluxPipeline",),
             description="FLUX.1-dev / -schnell (CLIP pooled + T5, flow matching, packed latents)")
