"""A hyper-parameter sweep: one job per chunk of configs, with `map` / `starmap`.

    uv run examples/sweep.py

With no Hugging Face token this runs on hfremote's embedded emulator of the Jobs platform; with
HF_TOKEN set, the same code runs on Hugging Face Jobs (a few cpu-basic jobs).
"""

from __future__ import annotations

import itertools

from hfremote import remote

LEARNING_RATES = (0.3, 0.1, 0.03, 0.01)
SEEDS = (0, 1, 2)
MOMENTUMS = (0.0, 0.9)


@remote(flavor="cpu-basic", timeout="10m")
def train(lr: float, seed: int, momentum: float = 0.0, steps: int = 200) -> dict[str, float]:
    """A toy training run: fit y = 3x - 1 with SGD (plain Python), return the final validation loss."""
    import random

    rng = random.Random(seed)
    data = [(x, 3 * x - 1 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(64))]
    train_set, val_set = data[:48], data[48:]
    w, b, vw, vb = rng.gauss(0, 1), rng.gauss(0, 1), 0.0, 0.0
    for step in range(steps):
        x, y = train_set[step % len(train_set)]
        error = w * x + b - y
        vw = momentum * vw + error * x
        vb = momentum * vb + error
        w, b = w - lr * vw, b - lr * vb
    loss = sum((w * x + b - y) ** 2 for x, y in val_set) / len(val_set)
    return {"lr": lr, "seed": seed, "momentum": momentum, "w": w, "b": b, "val_loss": loss}


def main() -> None:
    # map: the arguments zipped from several iterables; 4 learning rates x 3 seeds, 3 configs per job.
    grid = list(itertools.product(LEARNING_RATES, SEEDS))
    runs = list(train.map([lr for lr, _ in grid], [seed for _, seed in grid], chunksize=3, progress=False))

    # starmap: each item unpacked as the arguments; results as they come (ordered=False).
    with_momentum = itertools.product(LEARNING_RATES, SEEDS, MOMENTUMS[1:])
    runs += train.starmap(with_momentum, chunksize=4, ordered=False, progress=False)

    print(f"{'lr':>6} {'momentum':>8} {'seed':>4} {'w':>9} {'b':>9} {'val_loss':>10}")
    for r in sorted(runs, key=lambda r: (r["momentum"], -r["lr"], r["seed"])):
        print(f"{r['lr']:>6} {r['momentum']:>8} {r['seed']:>4} {r['w']:>9.4g} {r['b']:>9.4g} {r['val_loss']:>10.4g}")

    # The best config: lowest validation loss averaged over the seeds.
    by_config: dict[tuple[float, float], list[float]] = {}
    for r in runs:
        by_config.setdefault((r["lr"], r["momentum"]), []).append(r["val_loss"])
    (lr, momentum), losses = min(by_config.items(), key=lambda item: sum(item[1]) / len(item[1]))
    mean = sum(losses) / len(losses)
    print(f"best: lr={lr} momentum={momentum} (mean val_loss {mean:.5f} over {len(losses)} seeds)")


if __name__ == "__main__":
    main()
