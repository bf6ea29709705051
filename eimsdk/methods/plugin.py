"""The core plugin: registers eimsdk's own finders, manipulators and metrics the way any plugin does."""

import eimsdk


@eimsdk.hookimpl
def register_direction_finders(register):
    register("hsds", "eimsdk.methods.hsds:HSDSFinder", description="Hessian Score Distillation Sampling (Gauss-Newton)")
    register("text", "eimsdk.methods.baselines:TextOnlyFinder", description="text direction only (dz = 0)")
    register("sds", "eimsdk.methods.baselines:SDSFinder", description="first-order SDS gradient direction")
    register("dds", "eimsdk.methods.baselines:DDSFinder", description="first-order Delta Denoising Score direction")
    register("swap", "eimsdk.methods.baselines:SwapFinder",
             description="inversion + prompt swap (dz = 0, full inversion to t_edit = 1)")


@eimsdk.hookimpl
def register_manipulators(register):
    register("linear", "eimsdk.methods.manipulate:LinearJointManipulator",
             description="z0 + a dz, c + a dc; invert to t_e and sample back")
