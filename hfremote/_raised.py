"""An exception raised in the job, rebuilt here as itself from the parts the entry script sent.

Pickle re-creates an exception by calling its class with `args`, which fails for constructors with
keyword-only arguments (`DataError(msg, *, row=17)`, httpx's `HTTPStatusError`) or more arguments than
`args` holds. The entry script then sends the class, the args and each attribute pickled alone; here
the exception is made without calling its constructor (as `copy` does) and given its attributes back,
so `except DataError` catches it and `.row` is there. Only when its class cannot be loaded here does
the caller get a `RemoteError` with the type's name and the message.
"""

from __future__ import annotations

from typing import Any

import cloudpickle


def rebuild_exception(payload: dict[str, Any]) -> BaseException | None:
    """The exception described by the payload's parts, or None when its class cannot be loaded here."""
    data = payload.get("class")
    if not isinstance(data, bytes):
        return None
    try:
        cls = cloudpickle.loads(data)
    except Exception:
        return None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return None
    try:
        args = tuple(cloudpickle.loads(payload["args"]))
    except Exception:
        args = (str(payload.get("message", "")),)
    try:
        exc = cls.__new__(cls, *args)
    except Exception:
        exc = BaseException.__new__(cls)
    exc.args = args
    lost = list(payload.get("lost", []))
    for key, value in dict(payload.get("state", {})).items():
        try:
            vars(exc)[key] = cloudpickle.loads(value)
        except Exception:  # an attribute whose class is not here
            lost.append(key)
    if lost:
        note = f"hfremote: these attributes could not travel back from the job: {', '.join(sorted(lost))}"
        notes = getattr(exc, "__notes__", None)
        vars(exc)["__notes__"] = [*notes, note] if isinstance(notes, list) else [note]  # add_note is 3.11+
    return exc
