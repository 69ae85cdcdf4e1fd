"""hfremote.Executor: the standard `concurrent.futures` interface, with each call running as a job.

    uv run examples/executor.py

Code written for a ThreadPoolExecutor or a ProcessPoolExecutor (submit, map, as_completed, wait,
shutdown) runs on Hugging Face Jobs by changing the line that makes the executor. With no Hugging Face
token this runs on hfremote's embedded emulator of the Jobs platform; with HF_TOKEN set, the same code
runs a few cpu-basic jobs on Hugging Face Jobs.
"""

from __future__ import annotations

from concurrent.futures import as_completed

import hfremote


def fit(degree: int, seed: int = 0) -> dict[str, float]:
    """Fit a polynomial of `degree` to noisy samples of sin(3x) (plain Python least squares); its
    validation error."""
    import math
    import random

    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(80)]
    data = [(x, math.sin(3 * x) + rng.gauss(0, 0.1)) for x in xs]
    train, val = data[:60], data[60:]
    n = degree + 1
    # Normal equations (X^T X) w = X^T y, solved by Gaussian elimination.
    a = [[sum(x ** (i + j) for x, _ in train) for j in range(n)] + [sum(y * x**i for x, y in train)] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for row in range(n):
            if row != col:
                factor = a[row][col] / a[col][col]
                a[row] = [v - factor * p for v, p in zip(a[row], a[col], strict=True)]
    w = [a[i][n] / a[i][i] for i in range(n)]
    error = sum((sum(wi * x**i for i, wi in enumerate(w)) - y) ** 2 for x, y in val) / len(val)
    return {"degree": degree, "seed": seed, "val_mse": error}


def square(x: int) -> int:
    return x * x


def main() -> None:
    # At most 4 jobs unfinished at once; the other calls wait here (their futures say stage QUEUED).
    with hfremote.Executor(flavor="cpu-basic", timeout="10m", max_workers=4) as ex:
        futures = {ex.submit(fit, degree): degree for degree in range(1, 9)}
        for future in as_completed(futures):  # RemoteFutures are concurrent.futures.Futures
            result = future.result()
            print(f"degree {futures[future]}: val_mse {result['val_mse']:.4f}  (job {future.job_id})")
        best = min((f.result() for f in futures), key=lambda r: r["val_mse"])
        print(f"best degree: {best['degree']}")

        # Executor.map: results in order; chunksize=5 runs 5 inputs per job (4 jobs for 20 inputs).
        print("squares:", list(ex.map(square, range(20), chunksize=5)))


if __name__ == "__main__":
    main()
