"""Expected failures: each carries a message a user can act on and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CoiError(Exception):
    """A failure the user can do something about; `main()` prints it as one line."""

    exit_code = EXIT_FAILURE


class UsageError(CoiError):
    """The command line or a config file asked for something invalid."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file or variable is malformed; the message names file, key and fix."""


class IncusError(CoiError):
    """Incus refused or failed a request."""


class NotFound(IncusError):
    """An instance, image, profile or other Incus object does not exist."""


class CommandFailed(CoiError):
    """A host command exited non-zero; carries argv, exit code and output."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr or stdout).strip().splitlines()[-3:]
        detail = "; ".join(tail) if tail else "no output"
        super().__init__(f"`{' '.join(argv)}` exited {returncode}: {detail}")


class Interrupted(CoiError):
    """A signal asked coi to stop; cleanup has run."""

    exit_code = 130
