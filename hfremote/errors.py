"""The errors hfremote raises. One root, a handful of classes:

    HFRemoteError
    ├── OptionsError            bad options or arguments, found before anything is uploaded
    │   └── PicklingError       the function, an argument or a default cannot be shipped
    ├── BackendError            the platform refused or failed a request (after retries)
    └── JobFailedError          a job ended without a result (ERROR, timeout, cancelled, OOM, ...)

An exception raised by the user's function is re-raised as itself (a `ValueError` stays a
`ValueError`), with the remote traceback attached as its `__cause__`.
"""

from __future__ import annotations

from collections.abc import Sequence


class HFRemoteError(Exception):
    """The root of every error hfremote raises itself."""


class OptionsError(HFRemoteError, ValueError):
    """An option or argument is invalid; nothing was uploaded and no job was created."""


class PicklingError(OptionsError):
    """Something that must travel to the job cannot be pickled."""


class BackendError(HFRemoteError):
    """The Jobs platform (or the emulator) answered with an error that retries did not cure."""


class JobFailedError(HFRemoteError):
    """A job ended without producing a result."""

    def __init__(
        self,
        job_id: str,
        stage: str,
        message: str | None,
        url: str | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        self.job_id, self.stage, self.message, self.url = job_id, stage, message, url
        self.log_tail = list(log_tail)
        text = f"Job {job_id} ended {stage}" + (f": {message}" if message else " without a result")
        if url:
            text += f"\n  {url}"
        if self.log_tail:
            text += "\n  last log lines:\n" + "\n".join(f"    {line}" for line in self.log_tail)
        super().__init__(text)

    def __reduce__(self) -> tuple[type[JobFailedError], tuple[str, str, str | None, str | None, list[str]]]:
        return (JobFailedError, (self.job_id, self.stage, self.message, self.url, self.log_tail))


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside a job, shown as the `__cause__` of the re-raised one."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


__all__ = [
    "BackendError",
    "HFRemoteError",
    "JobFailedError",
    "OptionsError",
    "PicklingError",
    "RemoteTraceback",
]
