"""The project base exception; each package derives its own small, flat family."""


class FedgeError(Exception):
    """Base class of every error fedge raises on purpose."""
