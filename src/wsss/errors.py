"""Exceptions that the CLI reports as a one-line message instead of a traceback."""


class WsssError(Exception):
    """Base of every user-facing error; the message names the file or setting at fault."""


class DataError(WsssError, ValueError):
    """Bad input data (image, mask, label file, split)."""


class ConfigError(WsssError, ValueError):
    """Bad configuration value or option."""


class OfflineError(WsssError, RuntimeError):
    """Something needs the network (pretrained weights) and the machine is offline."""
