"""Exceptions that the CLI reports as a one-line message instead of a traceback."""

from __future__ import annotations

import os


class WsssError(Exception):
    """Base of every user-facing error; the message names the file or setting at fault."""


class DataError(WsssError, ValueError):
    """Bad input data (image, mask, label file, split).

    Attributes:
        path: The file or folder at fault, when known.
        kind: Short category of the problem (e.g. ``"missing image"``), used to group
            problems in ``wsss check-data``.
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike | None = None, kind: str = "bad data"
    ) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


class ConfigError(WsssError, ValueError):
    """Bad configuration value or option."""


class OfflineError(WsssError, RuntimeError):
    """Something needs the network (pretrained weights) and the machine is offline."""
