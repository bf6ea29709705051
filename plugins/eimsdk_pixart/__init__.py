"""PixArt backend plugin (PixArt-alpha and PixArt-Sigma). Registration only: importing it is cheap."""

import eimsdk


@eimsdk.hookimpl
def register_backends(register):
    register("pixart", "eimsdk_pixart.encoder:PixArtEncoder",
             pipeline_classes=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
             description="PixArt-alpha / PixArt-Sigma (T5, DDPM eps + learned sigma)")
