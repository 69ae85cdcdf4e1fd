"""An offline emulator of the Hugging Face Jobs platform (Jobs, scheduled jobs, Buckets, Xet storage).

The real `huggingface_hub` client and the `hf jobs` command line talk to it over HTTP on loopback;
jobs run as local processes, in a sandbox on Linux. Start it with `hfremote emulator`, or in-process:

    from hfremote.emulator import Emulator

    with Emulator() as emu:
        HfApi(endpoint=emu.endpoint, token=emu.token).run_job(image="python:3.12", command=[...])
"""

from ._faults import FaultRule, Faults
from ._sandbox import SandboxUnavailable
from ._server import Emulator

__all__ = ["Emulator", "FaultRule", "Faults", "SandboxUnavailable"]
