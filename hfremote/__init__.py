"""hfremote: run ordinary Python functions on Hugging Face Jobs.

    from hfremote import remote

    @remote(flavor="a10g-small", timeout="2h")
    def train(lr: float) -> dict: ...

    train(3e-4)                 # runs as a job, streams its logs, returns the dict
    future = train.submit(3e-4) # RemoteFuture at once
    for out in train.map([1e-4, 3e-4, 1e-3]): ...   # one job per input, results in order
    await train.aio(3e-4)       # in a coroutine; also train.submit.aio, async for out in train.map.aio(...)

    with hfremote.Executor(flavor="cpu-upgrade") as ex:   # a concurrent.futures.Executor
        futures = [ex.submit(score, item) for item in items]   # RemoteFutures

Without a Hugging Face token, jobs run on an embedded offline emulator of the platform.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from . import _signals

if TYPE_CHECKING:
    from ._aio import AsyncMapResults
    from ._cls import RemoteClass, RemoteInstance, setup
    from ._config import configure
    from ._executor import Executor
    from ._function import RemoteFunction, remote
    from ._future import RemoteError, RemoteFuture, as_completed, gather, wait
    from ._map import CostEstimate, MapResults
    from ._remote_run import RemoteRun
    from ._schedule import Deployment, ScheduledFunction, ScheduledRun, ScheduleInfo
    from .errors import BackendError, HFRemoteError, JobFailedError, OptionsError, PicklingError, RemoteTraceback

# Names are imported when first used (PEP 562), so `hfremote --help` and `hfremote.cli` do not pay for
# huggingface_hub and the engine (about 0.7 s) before they need them.
_WHERE = {
    "RemoteClass": "_cls",
    "RemoteInstance": "_cls",
    "setup": "_cls",
    "AsyncMapResults": "_aio",
    "configure": "_config",
    "Executor": "_executor",
    "RemoteFunction": "_function",
    "remote": "_function",
    "RemoteError": "_future",
    "RemoteFuture": "_future",
    "as_completed": "_future",
    "gather": "_future",
    "wait": "_future",
    "CostEstimate": "_map",
    "MapResults": "_map",
    "RemoteRun": "_remote_run",
    "Deployment": "_schedule",
    "ScheduledFunction": "_schedule",
    "ScheduledRun": "_schedule",
    "ScheduleInfo": "_schedule",
    "BackendError": "errors",
    "HFRemoteError": "errors",
    "JobFailedError": "errors",
    "OptionsError": "errors",
    "PicklingError": "errors",
    "RemoteTraceback": "errors",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        value: Any = version("hfremote")
    elif name in _WHERE:
        with warnings.catch_warnings():
            # huggingface_hub imports tqdm.auto, which warns in a notebook without ipywidgets: hfremote's
            # bars choose the text bar there themselves (see _console.progress_bar)
            warnings.filterwarnings("ignore", message="IProgress not found")
            module = importlib.import_module(f".{_WHERE[name]}", __name__)
        value = getattr(module, name)
    else:
        raise AttributeError(f"module 'hfremote' has no attribute {name!r}")
    globals()[name] = value  # once
    return value


_signals.install_sigterm()  # SIGTERM cancels the jobs this process starts, even from a worker thread


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__: str
__all__ = [
    "AsyncMapResults",
    "BackendError",
    "CostEstimate",
    "Deployment",
    "Executor",
    "HFRemoteError",
    "JobFailedError",
    "MapResults",
    "OptionsError",
    "PicklingError",
    "RemoteClass",
    "RemoteError",
    "RemoteFunction",
    "RemoteFuture",
    "RemoteInstance",
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
    "setup",
    "wait",
]
