"""Exceptions. Every message names the argument, what it got, and what to do instead."""

from __future__ import annotations


class EimsdkError(Exception):
    """Base class of every error eimsdk raises on purpose."""


class InputError(EimsdkError, ValueError):
    """A user-supplied argument (image, prompt, strength, path, ...) is invalid."""


class PluginError(EimsdkError):
    """A plugin failed to load, or registered something invalid or conflicting."""


class BackendNotFoundError(EimsdkError, LookupError):
    """No installed backend fits the requested model."""


class DirectionMismatchError(EimsdkError, ValueError):
    """A Direction was made for another model, or its file is corrupt or tampered with."""


class NumericalError(EimsdkError, FloatingPointError):
    """A NaN or Inf appeared where a finite value is required."""


class MemoryLimitError(InputError, MemoryError):
    """The work would not fit in the available memory; raised before the model runs, with the estimate and options."""
