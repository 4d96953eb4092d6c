class ConfigError(ValueError):
    """A user-facing configuration error: the message is one line naming the key, the value and what is valid."""
