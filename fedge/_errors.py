"""The project base exception; each package derives its own small, flat family."""


class FedgeError(Exception):
    """Base class of every error fedge raises on purpose."""


class MissingExtraError(FedgeError):
    """A command whose role's extra is not installed: names the one line that fixes it."""

    def __init__(self, command: str, extra: str | None, module: str) -> None:
        self.command = command
        self.extra = extra
        self.module = module
        install = (
            f"pip install 'fedge[{extra}]'" if extra else "pip install --force-reinstall fedge"
        )
        super().__init__(
            f"fedge {command} needs the module {module!r}, which this install lacks: {install}"
        )
