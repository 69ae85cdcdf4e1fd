"""The platform's hardware flavors with their published prices (USD per hour, billed per minute).

CPU rows are from the Jobs pricing page; GPU rows follow the Hub's hardware pricing for the same boxes.
`hf jobs hardware` and hfremote's cost estimates read this table.
"""

from __future__ import annotations

import os
from typing import Any

# name: (pretty name, cpu, ram, ephemeral storage, accelerator (count, model, vram) or None, USD per hour)
_FLAVORS: dict[str, tuple[str, str, str, str | None, tuple[int, str, str] | None, float]] = {
    "cpu-basic": ("CPU Basic", "2 vCPU", "16 GB", "50 GB", None, 0.01),
    "cpu-upgrade": ("CPU Upgrade", "8 vCPU", "32 GB", "50 GB", None, 0.03),
    "cpu-performance": ("CPU Performance", "32 vCPU", "256 GB", "1024 GB", None, 1.90),
    "cpu-xl": ("CPU XL", "16 vCPU", "124 GB", "1000 GB", None, 1.00),
    "t4-small": ("Nvidia T4 - small", "4 vCPU", "15 GB", "50 GB", (1, "T4", "16 GB"), 0.40),
    "t4-medium": ("Nvidia T4 - medium", "8 vCPU", "30 GB", "100 GB", (1, "T4", "16 GB"), 0.60),
    "l4x1": ("1x Nvidia L4", "8 vCPU", "30 GB", "400 GB", (1, "L4", "24 GB"), 0.80),
    "l4x4": ("4x Nvidia L4", "48 vCPU", "186 GB", "3200 GB", (4, "L4", "96 GB"), 3.80),
    "l40sx1": ("1x Nvidia L40S", "8 vCPU", "62 GB", "380 GB", (1, "L40S", "48 GB"), 1.80),
    "l40sx4": ("4x Nvidia L40S", "48 vCPU", "382 GB", "3200 GB", (4, "L40S", "192 GB"), 8.30),
    "l40sx8": ("8x Nvidia L40S", "192 vCPU", "1534 GB", "6500 GB", (8, "L40S", "384 GB"), 23.50),
    "a10g-small": ("Nvidia A10G - small", "4 vCPU", "15 GB", "110 GB", (1, "A10G", "24 GB"), 1.00),
    "a10g-large": ("Nvidia A10G - large", "12 vCPU", "46 GB", "200 GB", (1, "A10G", "24 GB"), 1.50),
    "a10g-largex2": ("2x Nvidia A10G - large", "24 vCPU", "92 GB", "1000 GB", (2, "A10G", "48 GB"), 3.00),
    "a10g-largex4": ("4x Nvidia A10G - large", "48 vCPU", "184 GB", "2000 GB", (4, "A10G", "96 GB"), 5.00),
    "a100-large": ("Nvidia A100 - large", "12 vCPU", "142 GB", "1000 GB", (1, "A100", "80 GB"), 2.50),
    "a100x4": ("4x Nvidia A100", "48 vCPU", "568 GB", "4000 GB", (4, "A100", "320 GB"), 10.00),
    "a100x8": ("8x Nvidia A100", "96 vCPU", "1136 GB", "8000 GB", (8, "A100", "640 GB"), 20.00),
    "h200": ("Nvidia H200", "23 vCPU", "256 GB", "3000 GB", (1, "H200", "141 GB"), 5.00),
    "h200x2": ("2x Nvidia H200", "46 vCPU", "512 GB", "6000 GB", (2, "H200", "282 GB"), 10.00),
    "h200x4": ("4x Nvidia H200", "92 vCPU", "1024 GB", "12000 GB", (4, "H200", "564 GB"), 20.00),
    "h200x8": ("8x Nvidia H200", "184 vCPU", "2048 GB", "24000 GB", (8, "H200", "1128 GB"), 40.00),
    "rtx-pro-6000": ("Nvidia RTX PRO 6000", "24 vCPU", "186 GB", "1000 GB", (1, "RTX PRO 6000", "96 GB"), 2.50),
    "rtx-pro-6000x2": ("2x Nvidia RTX PRO 6000", "48 vCPU", "372 GB", "2000 GB", (2, "RTX PRO 6000", "192 GB"), 5.00),
    "rtx-pro-6000x4": ("4x Nvidia RTX PRO 6000", "96 vCPU", "744 GB", "4000 GB", (4, "RTX PRO 6000", "384 GB"), 10.00),
    "rtx-pro-6000x8": (
        "8x Nvidia RTX PRO 6000",
        "192 vCPU",
        "1488 GB",
        "8000 GB",
        (8, "RTX PRO 6000", "768 GB"),
        20.00,
    ),
}

FLAVORS: tuple[str, ...] = tuple(_FLAVORS)


def hardware_table() -> list[dict[str, Any]]:
    rows = []
    for name, (pretty, cpu, ram, storage, accel, hourly) in _FLAVORS.items():
        micro = round(hourly / 60 * 1_000_000)
        rows.append(
            {
                "name": name,
                "prettyName": pretty,
                "cpu": cpu,
                "ram": ram,
                "ephemeralStorage": storage,
                "accelerator": None
                if accel is None
                else {
                    "type": "gpu",
                    "model": accel[1],
                    "quantity": str(accel[0]),
                    "vram": accel[2],
                    "manufacturer": "Nvidia",
                },
                "unitCostMicroUSD": micro,
                "unitCostUSD": micro / 1_000_000,
                "unitLabel": "minute",
            }
        )
    return rows


def check_flavor(flavor: str) -> str | None:
    """None when valid, else the message that lists the valid flavors."""
    if flavor in _FLAVORS:
        return None
    return f"Unknown flavor {flavor!r}. Valid flavors: {', '.join(FLAVORS)}"


def memory_bytes(flavor: str) -> int | None:
    """The flavor's memory ("16 GB") in bytes, as a job's metrics report it; None for an unknown flavor."""
    if flavor not in _FLAVORS:
        return None
    amount, _, unit = _FLAVORS[flavor][2].partition(" ")
    return int(float(amount) * {"GB": 10**9, "TB": 10**12}.get(unit, 10**9))


def gpu_count(flavor: str) -> int:
    """How many GPUs a flavor has (0 for CPU flavors and unknown names)."""
    row = _FLAVORS.get(flavor)
    return 0 if row is None or row[4] is None else row[4][0]


def flavor_env(flavor: str) -> dict[str, str]:
    """The hardware variables a job on `flavor` sees, as the platform sets them in its containers.

    Spaces document CPU_CORES (a number), MEMORY ("16Gi") and ACCELERATOR (the GPU hardware's name),
    and Jobs run on the same hardware; the exact values a Job sees are not documented (README: differences).
    """
    row = _FLAVORS.get(flavor)
    if row is None:
        return {}
    _, cpu, ram, _, accel, _ = row
    return {
        "CPU_CORES": cpu.split()[0],
        "MEMORY": f"{ram.split()[0]}Gi",
        "ACCELERATOR": "none" if accel is None else flavor,
    }


def detect_gpus() -> list[str]:
    """The host's NVIDIA GPUs by index, from their device nodes (/dev/nvidia0, /dev/nvidia1, ...)."""
    try:
        names = os.listdir("/dev")
    except OSError:
        return []
    return sorted(
        (n[len("nvidia") :] for n in names if n.startswith("nvidia") and n[len("nvidia") :].isdigit()), key=int
    )


# Device nodes every CUDA process needs besides its GPUs' own.
GPU_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
