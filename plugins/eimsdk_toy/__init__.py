"""The ground-truth toy world: rendered scenes, exact attribute readers, trained tiny DiTs."""

import eimsdk


@eimsdk.hookimpl
def register_readers(register):
    register("toy", "eimsdk_toy.readers:ToyReader", description="exact readers of the toy scenes' attributes")
