"""The model package's exceptions, importable without torch (a gateway bot catches them without loading a model)."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """The checkpoint is missing, damaged or of another kind; the message is one line saying which."""


class ImageError(ValueError):
    """The input could not be turned into a picture; ``str(error)`` is safe to show to a user."""
