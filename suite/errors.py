"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class SuiteError(Exception):
    """Base class: bad input, a missing device, a malformed results file."""


class UnknownCaseError(SuiteError, KeyError):
    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DeviceUnavailableError(SuiteError):
    pass


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one readable line: its type and the first line of its message, at most
    `limit` characters of it. Every place that reports an error in a table, a record or a
    terminal line uses this."""
    text = str(error).strip().splitlines()
    message = text[0].rstrip(",;: ") if text else ""
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
