"""Typed errors. Library code raises these; only the CLI turns them into one line on stderr."""

from __future__ import annotations

import re


class WrapcodecError(Exception):
    """Base class: the message is a single line a user can act on."""


class InputError(WrapcodecError):
    """A user-supplied file or argument is unusable."""


class Y4MError(InputError):
    """A y4m stream is malformed or uses an unsupported feature."""


class ContainerError(InputError):
    """A .wrp file is malformed, truncated, corrupted or of an unknown version."""


class OptionError(WrapcodecError):
    """A wrapper option is unknown, not yet available, or unusable for this input."""


class BackendError(WrapcodecError):
    """A codec backend is unknown or cannot run with this ffmpeg."""


class FFmpegError(BackendError):
    """ffmpeg failed or produced output that does not match what was asked for.

    Carries the command and the tail of ffmpeg's stderr so the user sees why.
    """

    def __init__(self, message: str, cmd: list[str] | None = None, stderr: str = "") -> None:
        self.cmd = cmd or []
        self.stderr = stderr
        tail = " | ".join(_telling_lines(stderr))
        full = message if not tail else f"{message}; ffmpeg said: {tail}"
        super().__init__(full)


_TELLING = re.compile(r"error|invalid|fail|unsupported|cannot|too small|not |unknown", re.I)


def _telling_lines(stderr: str, count: int = 3) -> list[str]:
    """The last few stderr lines that say what went wrong (not progress statistics)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    telling = [line for line in lines if _TELLING.search(line)]
    return (telling or lines)[-count:]
