"""hfremote: run ordinary Python functions on Hugging Face Jobs.

    from hfremote import remote

    @remote(flavor="a10g-small", timeout="2h")
    def train(lr: float) -> dict: ...

    train(3e-4)                 # runs as a job, streams its logs, returns the dict
    future = train.submit(3e-4) # RemoteFuture at once
    for out in train.map([1e-4, 3e-4, 1e-3]): ...   # one job per input, results in order

Without a Hugging Face token, jobs run on an embedded offline emulator of the platform.
"""

from importlib.metadata import version as _version

from . import _engine
from ._config import configure
from ._function import RemoteFunction, remote
from ._future import RemoteError, RemoteFuture, as_completed, gather, wait
from ._map import CostEstimate, MapResults
from ._remote_run import RemoteRun
from ._schedule import Deployment, ScheduledFunction, ScheduledRun, ScheduleInfo
from .errors import BackendError, HFRemoteError, JobFailedError, OptionsError, PicklingError, RemoteTraceback

__version__ = _version("hfremote")
_engine.install_sigterm()  # SIGTERM cancels the jobs this process starts, even when it starts them from a thread
__all__ = [
    "BackendError",
    "CostEstimate",
    "Deployment",
    "HFRemoteError",
    "JobFailedError",
    "MapResults",
    "OptionsError",
    "PicklingError",
    "RemoteError",
    "RemoteFunction",
    "RemoteFuture",
    "RemoteRun",
    "RemoteTraceback",
    "ScheduleInfo",
    "ScheduledFunction",
    "ScheduledRun",
    "__version__",
    "as_completed",
    "configure",
    "gather",
    "remote",
    "wait",
]
