"""Batch inference with a remote class: the "model" is loaded once per job, then embeds that job's chunk.

    uv run examples/embedder.py

With no Hugging Face token this runs on hfremote's embedded emulator of the Jobs platform; with
HF_TOKEN set, the same code runs on Hugging Face Jobs (a few cpu-basic jobs). The model here is a toy
(hashed character trigrams) so the example needs no download; swap in sentence-transformers on a GPU
flavor for the real thing.
"""

from __future__ import annotations

import math
import os
import time
import zlib

from hfremote import remote, setup


class EmbedderModel:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions  # runs in the job: the handle here only keeps the arguments

    @setup
    def load(self) -> None:
        """Once per job: stands for loading weights (slow), which each input then reuses."""
        time.sleep(0.5)
        self.loaded_at = time.time()
        self.job = os.environ.get("JOB_ID", "local")

    def embed(self, text: str) -> tuple[str, list[float]]:
        vector = [0.0] * self.dimensions
        for i in range(len(text) - 2):
            vector[zlib.crc32(text[i : i + 3].encode()) % self.dimensions] += 1.0  # the same in every job
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return self.job, [v / norm for v in vector]


Embedder = remote(flavor="cpu-basic", timeout="10m")(EmbedderModel)

if __name__ == "__main__":
    texts = [f"document number {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "jobs", "gpus"] * 25)]
    embedder = Embedder(64)
    started = time.time()
    results = list(embedder.embed.map(texts, chunksize=25))  # 4 jobs, one model load each
    jobs = {job for job, _ in results}
    print(f"embedded {len(results)} texts in {len(jobs)} jobs ({time.time() - started:.1f}s), one load per job")
    job, vector = embedder.embed("a single text is one job")
    print(f"one call: job {job}, first values {[round(v, 3) for v in vector[:4]]}")
