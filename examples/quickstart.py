"""Quickstart: Python functions running as Hugging Face Jobs.

    uv run examples/quickstart.py

With no Hugging Face token this runs on hfremote's embedded emulator of the Jobs platform; with
HF_TOKEN set, the same code runs on Hugging Face Jobs (and costs a few cents of cpu-basic time).
"""

from __future__ import annotations

import platform

from hfremote import remote


@remote(flavor="cpu-basic", timeout="10m")
def where_am_i(greeting: str) -> dict[str, str]:
    import socket

    print(f"{greeting} from the job")  # streamed back to your terminal
    return {"host": socket.gethostname(), "python": platform.python_version()}


@remote(timeout="5m")
def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


class TooBig(ValueError):
    pass


@remote(timeout="5m")
def check(n: int) -> int:
    if n > 10:
        raise TooBig(f"{n} is more than 10")
    return n


def main() -> None:
    # A blocking call: the job's log lines stream to stderr, the value comes back.
    print("result:", where_am_i("hello"))

    # A small fan-out: submit returns futures at once; the jobs run in parallel.
    futures = {n: collatz_steps.submit(n) for n in (27, 97, 871)}
    for n, future in futures.items():
        cost = future.cost or 0.0  # a few seconds of cpu-basic: fractions of a cent
        shown = f"~${cost:.4f}" if cost >= 0.0001 else "<$0.0001"
        print(f"collatz({n}) takes {future.result()} steps  (job {future.job_id}, {shown})")

    # map: one job per input (or per chunk of inputs), results in input order.
    print("collatz(1..8):", list(collatz_steps.map(range(1, 9), chunksize=2)))

    # The function's own exception comes back as itself, with the remote traceback as its cause.
    try:
        check(12)
    except TooBig as e:
        print("caught the remote exception:", repr(e))

    # And the same function, called here without a job.
    print("local:", collatz_steps.local(27))


if __name__ == "__main__":
    main()
