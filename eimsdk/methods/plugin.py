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
    register("flowedit", "eimsdk.methods.flowedit:FlowEditFinder",
             description="FlowEdit (Kulikov et al. 2024): text direction + settings for the flowedit manipulator")


@eimsdk.hookimpl
def register_manipulators(register):
    register("linear", "eimsdk.methods.manipulate:LinearJointManipulator",
             description="z0 + a dz, c + a dc; invert to t_e and sample back")
    register("flowedit", "eimsdk.methods.flowedit:FlowEditManipulator",
             description="FlowEdit: integrate target minus source velocity from the source, no inversion")
