"""hfremote: run ordinary Python functions on Hugging Face Jobs.

    from hfremote import remote

    @remote(flavor="a10g-small", timeout="2h")
    def train(lr: float) -> dict: ...

    train(3e-4)                 # runs as a job, streams its logs, returns the dict
    future = train.submit(3e-4) # RemoteFuture at once

Without a Hugging Face token, jobs run on an embedded offline emulator of the platform.
"""

from importlib.metadata import version as _version

from ._config import configure
from ._function import RemoteFunction, remote
from ._future import RemoteError, RemoteFuture
from .errors import BackendError, HFRemoteError, JobFailedError, OptionsError, PicklingError, RemoteTraceback

__version__ = _version("hfremote")
__all__ = [
    "BackendError",
    "HFRemoteError",
    "JobFailedError",
    "OptionsError",
    "PicklingError",
    "RemoteError",
    "RemoteFunction",
    "RemoteFuture",
    "RemoteTraceback",
    "__version__",
    "configure",
    "remote",
]
