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
