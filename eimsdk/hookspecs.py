"""pluggy hook specifications: the whole plugin surface of eimsdk.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, registered through the
``eimsdk`` entry-point group. Every hook receives a ``register`` callback; call it once per component.
Components are given as *import strings* (``"package.module:Object"``) or objects, so that listing plugins
stays cheap: nothing heavy is imported until a component is used.

Example plugin module::

    import eimsdk

    @eimsdk.hookimpl
    def register_direction_finders(register):
        register("my-finder", "my_package.finder:MyFinder")

and in the plugin's ``pyproject.toml``::

    [project.entry-points.eimsdk]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "eimsdk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_backends(register: Register) -> None:
    """Register model-family backends (Encoder subclasses).

    ``register(name, target, *, pipeline_classes=(...), description="")``: ``pipeline_classes`` are the
    diffusers ``model_index.json`` ``_class_name`` values this backend loads, used by
    ``Editor.from_pretrained`` to pick a backend. Example::

        register("pixart", "eimsdk_pixart.encoder:PixArtEncoder",
                 pipeline_classes=("PixArtAlphaPipeline", "PixArtSigmaPipeline"))
    """


@hookspec
def register_direction_finders(register: Register) -> None:
    """Register DirectionFinder classes. Example: ``register("hsds", "eimsdk.methods.hsds:HSDSFinder")``."""


@hookspec
def register_manipulators(register: Register) -> None:
    """Register Manipulator classes. Example: ``register("linear", "eimsdk.methods.manipulate:LinearJointManipulator")``."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register edit metrics (EditMetric subclasses), which ``eimsdk bench --metrics NAME`` runs on every edit.

    Example: ``register("psnr", "eimsdk.metrics.pixels:PSNR", description="PSNR of source and edit")``.
    """


@hookspec
def register_readers(register: Register) -> None:
    """Register attribute readers. Example: ``register("toy", "eimsdk_toy.readers:ToyReader")``."""


@hookspec
def register_models(register: Register) -> None:
    """Register named models that ship with a plugin (no download), usable wherever a model path is taken.

    The target is a function returning the model's folder. Example::

        register("toy-pixart", "eimsdk_toy:default_model_path", description="toy PixArt trained on scenes")
    """


@hookspec
def register_manifests(register: Register) -> None:
    """Register benchmark manifest sources, read by ``eimsdk bench NAME[:ARGUMENT]``: functions ``(argument,
    folder) -> list[ManifestItem]`` that write the items' images under ``folder``. Example::

        register("toy", "eimsdk_toy.bench:toy_manifest_source", description="toy:SCENES[:SEED] seeded toy scenes")
    """


@hookspec
def register_commands(register: Register) -> None:
    """Register ``eimsdk`` subcommands: functions ``(parser) -> handler`` that add the command's arguments and
    return ``handler(args) -> exit code``. ``eimsdk --help`` imports their module: keep it cheap. Example::

        register("demo", "eimsdk_toy.demo:demo_command", description="edit a toy scene with HSDS")
    """


KINDS: dict[str, str] = {
    "backend": "register_backends",
    "finder": "register_direction_finders",
    "manipulator": "register_manipulators",
    "metric": "register_metrics",
    "reader": "register_readers",
    "model": "register_models",
    "manifest": "register_manifests",
    "command": "register_commands",
}
