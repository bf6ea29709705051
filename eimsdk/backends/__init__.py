"""Bases that backend plugins build on: :class:`~eimsdk.backends.diffusers_base.DiffusersEncoder` and friends."""
