"""The validation edge: ``key=value`` settings routed to a finder or a manipulator, and scalar arguments.

Every user-facing entry (the CLI's ``edit``, ``direction`` and ``bench``, and :class:`eimsdk.Editor`) passes
its settings, seeds, devices and strengths through here, so a bad value gets one :class:`InputError` that
names the argument, what it got, and what is accepted, before any model loads.

Routing: a setting goes to the finder when the finder's config has a field of that name, to the manipulator
when the manipulator's has, to both when both have (``t_edit`` of the ``swap`` finder and of the linear
manipulator mean the same noise level); any other key is refused with the accepted names.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from typing import Any, Literal, Sequence, get_args, get_origin

from eimsdk.errors import InputError

#: Seeds must fit a torch generator's 64-bit state (and be non-negative, so every seed is one number).
MAX_SEED = 2**63 - 1
#: Edit strengths beyond this magnitude are allowed but warned about: the toy and real models give noise there.
STRENGTH_WARN = 10.0


def parse_value(text: str) -> Any:
    """A setting's value: JSON when it parses (``0.1``, ``4``, ``null``, ``"x"``), else the raw text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_settings(items: Sequence[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``["lam=0.1", "k=4"]`` -> ``{"lam": 0.1, "k": 4}``; a malformed item is an InputError naming ``flag``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def route_settings(settings: dict[str, Any], finder_cls: type | None, manipulator_cls: type | None, *,
                   finder: str = "finder", manipulator: str = "manipulator") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split settings into (finder settings, manipulator settings) by field name (module docstring)."""
    finder_fields = set(_config_of(finder_cls).model_fields) if finder_cls is not None else set()
    manip_fields = set(_config_of(manipulator_cls).model_fields) if manipulator_cls is not None else set()
    finder_cfg, manip_cfg = {}, {}
    for key, value in settings.items():
        if key not in finder_fields | manip_fields:
            accepted = [f"{what} {label!r}: {', '.join(sorted(fields)) or 'none'}" for what, label, fields, cls in
                        (("finder", finder, finder_fields, finder_cls),
                         ("manipulator", manipulator, manip_fields, manipulator_cls)) if cls is not None]
            raise InputError(f"setting {key!r} is unknown; accepted settings are {'; '.join(accepted)}")
        if key in finder_fields:
            finder_cfg[key] = value
        if key in manip_fields:
            manip_cfg[key] = value
    return finder_cfg, manip_cfg


def make_component(cls: type, settings: dict[str, Any], what: str) -> Any:
    """``cls(**settings)`` with a bad setting turned into an InputError naming the key and what it accepts."""
    from pydantic import ValidationError

    try:
        return cls(**settings)
    except ValidationError as exc:
        raise InputError(describe_error(exc, getattr(cls, "Config", None), what)) from None
    except TypeError as exc:  # a component without a pydantic config, given a keyword it does not take
        raise InputError(f"{what} settings {sorted(settings)} are not accepted: {exc}") from None


def describe_error(exc: Any, config_cls: type | None, what: str) -> str:
    """One line for a pydantic ValidationError: each bad key, the value it got and what it accepts."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        fields = getattr(config_cls, "model_fields", {})
        if err["type"] == "extra_forbidden":
            problems.append(f"{key!r} is not a setting (accepted: {', '.join(sorted(fields)) or 'none'})")
        else:
            accepted = accepted_range(config_cls, key.split(".")[0]) if fields else "see the component's docs"
            problems.append(f"{key}={err.get('input')!r} is invalid ({err['msg']}); accepted: {accepted}")
    return f"{what} settings: " + "; ".join(problems)


def accepted_range(config_cls: type, field: str) -> str:
    """What a config field accepts, in words: its type, bounds or choices."""
    info = config_cls.model_fields.get(field)
    if info is None:
        return ", ".join(sorted(config_cls.model_fields))
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    literal = next((a for a in [annotation, *args] if get_origin(a) is Literal), None)
    if literal is not None:
        return "one of " + ", ".join(repr(c) for c in get_args(literal))
    base = args[0] if args else annotation
    text = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(base, str(base))
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{symbols[name]} {getattr(m, name)}" for m in info.metadata for name in symbols if hasattr(m, name)]
    if bounds:
        text += " " + " and ".join(bounds)
    if type(None) in get_args(annotation):
        text += ", or null"
    return text


def _config_of(cls: type) -> type:
    return getattr(cls, "Config")


# ------------------------------------------------------------------------------------------------ scalars
def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed as an int in [0, 2**63 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"{name}={seed!r} is invalid; use an integer from 0 to {MAX_SEED}")
    return int(seed)


def check_strength(strength: Any, name: str = "strength", *, warn: bool = True) -> float:
    """A strength as a float: Python, numpy or 0-d torch numbers; finite; a warning (``warn``) beyond +-10."""
    value = strength
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar or 0-d tensor
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number (negative reverses the edit), got {strength!r}")
    value = float(value)
    if warn and abs(value) > STRENGTH_WARN:
        warnings.warn(f"{name}={value:g} is far outside the useful range (about -3 to 3); beyond +-{STRENGTH_WARN:g} "
                      "edits usually turn to noise", stacklevel=3)
    return value


def parse_strengths(text: str, name: str = "--strengths") -> list[float]:
    """``"-1,0,1"`` -> ``[-1.0, 0.0, 1.0]``; anything that is not a finite number is an InputError."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise InputError(f"{name}={text!r} holds no numbers; write comma-separated strengths such as -1,0,1")
    out = []
    for part in parts:
        try:
            out.append(check_strength(float(part), name, warn=False))
        except ValueError:
            raise InputError(f"{name}={text!r}: {part!r} is not a number; write comma-separated strengths such as "
                             "-1,0,1") from None
    return out


def check_device(device: Any, name: str = "device") -> Any:
    """A torch device this process can use: refuses malformed names and CUDA/MPS where torch has none."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name}={device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name}={device!r}: this torch build ({torch.__version__}) sees no CUDA GPU; use "
                             f"{name}=cpu or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{name}={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{name}={device!r}: MPS is not available on this machine; use {name}=cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{name}={device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return device
