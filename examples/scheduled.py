"""Scheduled functions: a Python function deployed as a Hugging Face scheduled (cron) job.

    uv run examples/scheduled.py

With no Hugging Face token this runs on hfremote's embedded emulator of the Jobs platform; with
HF_TOKEN set, it deploys a real scheduled job (and deletes it again at the end).
"""

from __future__ import annotations

from hfremote import remote


@remote.schedule("@daily", name="leaderboard-refresh", flavor="cpu-basic", timeout="10m")
def refresh_leaderboard(board: str, top: int = 3) -> dict[str, object]:
    import random
    from datetime import datetime, timezone

    scores = sorted((round(random.uniform(50, 100), 1) for _ in range(10)), reverse=True)
    print(f"refreshing {board}: best score {scores[0]}")  # in the run's logs
    return {"board": board, "top": scores[:top], "refreshed": datetime.now(timezone.utc).isoformat()}


def main() -> None:
    # Deploy: upload the function and its arguments, create the scheduled job. Idempotent.
    print(refresh_leaderboard.deploy("open-llm", top=3))
    # The same code and arguments again: nothing is uploaded, nothing changes.
    print(refresh_leaderboard.deploy("open-llm", top=3))

    # Run it now, outside the schedule, and wait for its result.
    run = refresh_leaderboard.trigger()
    print("triggered run", run.job_id, "->", run.result(timeout=300))

    info = refresh_leaderboard.info()
    print(f"schedule {info.schedule}, suspended={info.suspended}, next run {info.next_run}, last run {info.last_run}")

    for past in refresh_leaderboard.runs():  # newest first; each keeps its own result
        print(f"  run {past.job_id} {past.stage}: {past.result(timeout=300)}")

    # Remove the scheduled job and every file it uploaded.
    refresh_leaderboard.delete()
    print("deleted", refresh_leaderboard.name)


if __name__ == "__main__":
    main()
