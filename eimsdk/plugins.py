"""Plugin discovery and the component registry.

Plugins are found through the ``eimsdk`` entry-point group (built-in ones too) and talk to eimsdk only
through the hooks in :mod:`eimsdk.hookspecs`. Loading is isolated: a plugin that fails to import, or whose
hook raises, or whose entry-point name is invalid, or that registers a bad or duplicate component, is
recorded as failed with its error, and every other plugin keeps working. The built-in plugins (those of the
``eimsdk`` distribution) load first, so a third-party plugin that registers a built-in name (``hsds``) fails
alone, with both providers named, and the built-ins keep their names. Nothing here imports torch.

Environment variables (a value that names no installed plugin, or is empty, or is not understood, gets a
warning that says what was done instead):

- ``EIMSDK_PLUGINS_ALLOW``: comma-separated plugin names; when set, only these are loaded.
- ``EIMSDK_PLUGINS_BLOCK``: comma-separated plugin names that are never loaded.
- ``EIMSDK_PLUGINS_STRICT``: ``1``/``true``/``yes``/``on`` raise on the first plugin failure instead of recording
  it; ``0``/``false``/``no``/``off`` (or unset) record it.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from eimsdk import hookspecs
from eimsdk.errors import PluginError

ENTRY_POINT_GROUP = "eimsdk"
BUILTIN_DISTRIBUTION = "eimsdk"
STRICT_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False, "": False}
NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")

# Which base class each kind of component must derive from (checked when the component is loaded, so that
# listing plugins never imports torch).
BASES: dict[str, str] = {
    "backend": "eimsdk.interfaces:Encoder",
    "finder": "eimsdk.interfaces:DirectionFinder",
    "manipulator": "eimsdk.interfaces:Manipulator",
    "metric": "eimsdk.interfaces:EditMetric",
    "reader": "eimsdk.interfaces:AttributeReader",
    "model": "",  # a function returning a folder; not type-checked
    "manifest": "",  # a function (argument, folder) -> manifest items
    "command": "",  # a function (parser) -> handler
}


def import_string(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object."""
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass
class Component:
    """One registered component: what it is called, where it lives, and which plugin provided it."""

    kind: str
    name: str
    target: Any  # import string or object
    plugin: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _loaded: Any = None

    def load(self) -> Any:
        """Import (once) and type-check the component; errors name the plugin that provided it."""
        if self._loaded is not None:
            return self._loaded
        try:
            obj = import_string(self.target) if isinstance(self.target, str) else self.target
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin named
            raise PluginError(
                f"{self.kind} {self.name!r} from plugin {self.plugin!r} failed to import {self.target!r}: "
                f"{type(exc).__name__}: {exc}. Install the plugin's extra (for example `pip install "
                f"\"eimsdk[{self.plugin}]\"`) or disable it with EIMSDK_PLUGINS_BLOCK={self.plugin}."
            ) from exc
        if not BASES[self.kind]:
            if not callable(obj):
                raise PluginError(f"{self.kind} {self.name!r} from plugin {self.plugin!r} must be callable, got {obj!r}")
            self._loaded = obj
            return obj
        base = import_string(BASES[self.kind])
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise PluginError(
                f"{self.kind} {self.name!r} from plugin {self.plugin!r} is {obj!r}, which is not a subclass of "
                f"{BASES[self.kind]}; fix the plugin's registration."
            )
        self._loaded = obj
        return obj


@dataclass
class PluginInfo:
    """What ``eimsdk plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    status: str = "ok"  # ok | failed | blocked

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "module": self.module, "distribution": self.distribution, "version": self.version,
            "status": self.status, "provides": self.provides, "error": self.error,
        }


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    names = {item.strip() for item in raw.split(",") if item.strip()}
    if not names:
        warnings.warn(f"{var}={raw!r} names no plugin; it is ignored (unset it, or list plugin names separated by "
                      "commas)", stacklevel=3)
        return None
    return names


def _env_strict() -> bool:
    raw = os.environ.get("EIMSDK_PLUGINS_STRICT", "")
    if raw.strip().lower() not in STRICT_VALUES:
        warnings.warn(f"EIMSDK_PLUGINS_STRICT={raw!r} is not understood; use 1 (raise on a plugin failure) or 0 "
                      "(record it); plugins load without strict mode", stacklevel=3)
        return False
    return STRICT_VALUES[raw.strip().lower()]


class PluginManager:
    """Loads plugins, runs their registration hooks, and keeps the registry of components."""

    def __init__(self, *, load_entry_points: bool = True, strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = _env_strict() if strict is None else strict
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in hookspecs.KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        if load_entry_points:
            self.load_entry_points()

    # ----------------------------------------------------------------------------------------- loading
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        allow, block = _env_list("EIMSDK_PLUGINS_ALLOW"), _env_list("EIMSDK_PLUGINS_BLOCK") or set()
        seen: set[str] = set()
        found, unreadable = _entry_points(group)
        for info in unreadable:
            self.plugins[info.name] = info
            self._fail(info, info.error or "", PluginError(info.error))
        entry_points = sorted(found, key=lambda e: (not _is_builtin(e), e.name))
        for var, names in (("EIMSDK_PLUGINS_ALLOW", allow or set()), ("EIMSDK_PLUGINS_BLOCK", block)):
            unknown = sorted(names - {ep.name for ep in entry_points})
            if unknown:
                warnings.warn(f"{var} names {', '.join(map(repr, unknown))}, which is not an installed plugin "
                              f"(installed: {', '.join(sorted({ep.name for ep in entry_points}))}); check the "
                              "spelling", stacklevel=2)
        for ep in entry_points:
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(name=ep.name, module=ep.value, distribution=dist.name if dist else None,
                              version=dist.version if dist else None)
            if ep.name in block or (allow is not None and ep.name not in allow):
                info.status = "blocked"
                info.error = ("blocked by EIMSDK_PLUGINS_BLOCK" if ep.name in block
                              else "not in EIMSDK_PLUGINS_ALLOW")
                self.plugins[ep.name] = info
                continue
            if not NAME_RE.match(ep.name):
                self.plugins[ep.name] = info
                self._fail(info, f"entry-point name {ep.name!r} is invalid: use lowercase letters, digits, '.', '_' "
                           "or '-'; rename it in the plugin's package metadata", PluginError(ep.name))
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                self.plugins[ep.name] = info
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            self.register(module, ep.name, info=info)

    def register(self, plugin: Any, name: str, *, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object (module or instance with hookimpls) and collect its components."""
        if not NAME_RE.match(name):
            raise PluginError(f"plugin name {name!r} is invalid: use lowercase letters, digits, '.', '_' or '-'")
        if name in self.plugins and self.plugins[name].status == "ok":
            raise PluginError(f"a plugin named {name!r} is already registered ({self.plugins[name].module})")
        info = info or PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__))
        self.plugins[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, f"registration failed: {type(exc).__name__}: {exc}", exc)
            return info
        staged: list[Component] = []
        for kind, hook_name in hookspecs.KINDS.items():
            impls = [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.plugin_name == name]
            for impl in impls:
                def _register(comp_name: str, target: Any, *, description: str = "", _kind: str = kind, **extra: Any):
                    staged.append(Component(kind=_kind, name=comp_name, target=target, plugin=name,
                                            description=description, extra=extra))
                try:
                    impl.function(register=_register)
                except Exception as exc:  # noqa: BLE001
                    self.pm.unregister(name=name)
                    self._fail(info, f"hook {hook_name} raised {type(exc).__name__}: {exc}", exc)
                    return info
        try:
            self._validate(staged)
        except PluginError as exc:
            self.pm.unregister(name=name)
            self._fail(info, str(exc), exc)
            return info
        for comp in staged:
            self.components[comp.kind][comp.name] = comp
            info.provides.setdefault(comp.kind, []).append(comp.name)
        return info

    def _validate(self, staged: list[Component]) -> None:
        names: dict[tuple[str, str], Component] = {}
        for comp in staged:
            if not NAME_RE.match(comp.name):
                raise PluginError(f"{comp.kind} name {comp.name!r} from plugin {comp.plugin!r} is invalid: use "
                                  "lowercase letters, digits, '.', '_' or '-' (at most 64 characters)")
            if not (isinstance(comp.target, str) and ":" in comp.target) and not isinstance(comp.target, type):
                raise PluginError(f"{comp.kind} {comp.name!r} from plugin {comp.plugin!r}: target must be a class "
                                  f"or an import string 'package.module:Class', got {comp.target!r}")
            key = (comp.kind, comp.name)
            existing = self.components[comp.kind].get(comp.name) or names.get(key)
            if existing is not None:
                raise PluginError(f"{comp.kind} name {comp.name!r} is registered twice: by plugin "
                                  f"{existing.plugin!r} ({existing.target}) and by plugin {comp.plugin!r} "
                                  f"({comp.target}); rename one, or block one with EIMSDK_PLUGINS_BLOCK")
            names[key] = comp

    def blocked_hint(self) -> str:
        """A sentence naming the installed plugins that ALLOW/BLOCK keep from loading ('' when none)."""
        blocked = sorted(p.name for p in self.plugins.values() if p.status == "blocked")
        if not blocked:
            return ""
        return (f"Installed but blocked by EIMSDK_PLUGINS_ALLOW/EIMSDK_PLUGINS_BLOCK: {', '.join(blocked)}; "
                "unblock the one that provides it.")

    def _fail(self, info: PluginInfo, message: str, exc: BaseException) -> None:
        info.status = "failed"
        info.error = message
        info.provides = {}
        if self.strict:
            raise PluginError(f"plugin {info.name!r} ({info.module}): {message}") from exc
        info.traceback = "".join(traceback.format_exception(exc))  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------------------- lookup
    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; a clear error lists what is installed otherwise."""
        if kind not in self.components:
            raise PluginError(f"kind={kind!r} is not one of {sorted(self.components)}")
        try:
            return self.components[kind][name]
        except KeyError:
            have = ", ".join(sorted(self.components[kind])) or "none"
            failed = [p for p in self.plugins.values() if p.status == "failed"]
            hint = ""
            if failed:
                hint = " Plugins that failed to load: " + "; ".join(f"{p.name} ({p.error})" for p in failed) + "."
            if self.blocked_hint():
                hint += " " + self.blocked_hint()
            raise PluginError(f"no {kind} named {name!r} is installed (installed: {have}).{hint} "
                              "Run `eimsdk plugins` to see what is available.") from None

    def load(self, kind: str, name: str) -> Any:
        return self.get(kind, name).load()

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[Component]:
        """Registered components, filtered by kind and by a substring of the name."""
        kinds: Iterable[str] = [kind] if kind else self.components
        return [c for k in kinds for n, c in sorted(self.components[k].items()) if not pattern or pattern in n]

    def backend_for_pipeline_class(self, class_name: str) -> list[Component]:
        return [c for c in self.components["backend"].values() if class_name in c.extra.get("pipeline_classes", ())]

    def report(self) -> list[dict[str, Any]]:
        return [info.as_dict() for _, info in sorted(self.plugins.items())]


def _entry_points(group: str) -> tuple[list[metadata.EntryPoint], list[PluginInfo]]:
    """The ``group`` entry points of every installed distribution, and, as failed plugins, the distributions that
    declare the group in an ``entry_points.txt`` that cannot be parsed (one of them must not hide the others)."""
    found, unreadable = [], []
    for dist in metadata.distributions():
        try:
            found.extend(dist.entry_points.select(group=group))
        except Exception as exc:  # noqa: BLE001 - malformed metadata of one distribution
            text = dist.read_text("entry_points.txt") or ""
            if f"[{group}]" in text:
                name = dist.metadata["Name"] or "unknown"
                unreadable.append(PluginInfo(name=name, module="?", distribution=name, version=dist.version,
                                             error=f"entry_points.txt of distribution {name!r} cannot be parsed: "
                                                   f"{type(exc).__name__}: {exc}"))
    return found, unreadable


def _is_builtin(ep: metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.name == BUILTIN_DISTRIBUTION


_MANAGER: PluginManager | None = None
_LOCK = threading.Lock()


def get_plugin_manager(*, reload: bool = False) -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _MANAGER
    with _LOCK:
        if _MANAGER is None or reload:
            _MANAGER = PluginManager()
        return _MANAGER
