"""Schedules as the platform takes them: presets or 5-field cron. Shared by the client and the emulator."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter

PRESETS = {
    "@annually": "0 0 1 1 *",
    "@yearly": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def schedule_problem(schedule: object) -> str | None:
    """Why `schedule` is not one the platform accepts, or None."""
    if not isinstance(schedule, str):
        return f"Invalid schedule {schedule!r}: give a preset ({', '.join(PRESETS)}) or a 5-field cron string"
    cron = PRESETS.get(schedule.strip(), schedule.strip())
    if cron.startswith("@"):
        return f"Unknown schedule preset {schedule!r}. Use one of {', '.join(PRESETS)} or 5-field cron"
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        return (
            f"Invalid schedule {schedule!r}: expected a preset ({', '.join(PRESETS)}) or a 5-field cron "
            "expression such as '*/5 * * * *'"
        )
    try:
        croniter(cron).get_next(datetime)
    except ValueError:  # e.g. '0 0 31 2 *': valid fields, but no such date
        return f"Invalid schedule {schedule!r}: it never comes due"
    return None


def next_run(schedule: str, after: datetime) -> datetime:
    result: datetime = croniter(PRESETS.get(schedule.strip(), schedule.strip()), after).get_next(datetime)
    return result
