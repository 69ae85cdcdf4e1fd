"""hfremote: run ordinary Python functions on Hugging Face Jobs.

The function-level API (`remote`, `RemoteFunction`, `RemoteFuture`, ...) arrives with the `@remote`
issue; today the package ships the offline Jobs emulator (`hfremote.emulator`, `hfremote emulator`).
"""

from importlib.metadata import version as _version

__version__ = _version("hfremote")
__all__: list[str] = ["__version__"]
