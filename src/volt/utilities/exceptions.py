"""Exception types users catch by name."""


class MisconfigurationException(Exception):
    """A Trainer, module or callback was configured in a way that cannot work. The message says how to fix it."""
