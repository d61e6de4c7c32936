"""Contracts every layer shares: payload types, the backend base, the registry, the config schema.

Nothing here imports another `services` package: this is the bottom layer.
"""
