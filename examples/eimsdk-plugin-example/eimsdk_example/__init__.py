"""Registration of the example plugin. Keep this module cheap: components are named by import string."""

import eimsdk


@eimsdk.hookimpl
def register_metrics(register):
    register("brightness-change", "eimsdk_example.metric:BrightnessChange", description="brightness of edit - source")


@eimsdk.hookimpl
def register_direction_finders(register):
    register("unit-text", "eimsdk_example.finder:UnitTextFinder",
             description="text direction rescaled to a fraction of ||c|| (example plugin)")
