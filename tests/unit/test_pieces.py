"""Pure pieces of the emulator: schedules, fault specs, mount-path translation, job specs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from hfremote._cron import next_run
from hfremote.emulator import Faults, _sandbox
from hfremote.emulator._hardware import flavor_env, gpu_count
from hfremote.emulator._specs import check_schedule
from hfremote.emulator._util import HTTPError, iso, parse_iso
from hfremote.emulator._volumes import Mount, translate

NOON = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("@hourly", datetime(2026, 11, 26, 13, 0, tzinfo=timezone.utc)),
        ("@daily", datetime(2026, 11, 27, 0, 0, tzinfo=timezone.utc)),
        ("@weekly", datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc)),
        ("@monthly", datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)),
        ("@yearly", datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("@annually", datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("*/5 * * * *", datetime(2026, 11, 26, 12, 35, tzinfo=timezone.utc)),
        ("0 9 * * 1", datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)),
    ],
)
def test_next_run(schedule: str, expected: datetime) -> None:
    check_schedule(schedule)
    assert next_run(schedule, NOON) == expected


@pytest.mark.parametrize("schedule", ["", "@fortnightly", "* * *", "61 * * * *", "* * * * * *", "every day"])
def test_bad_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(HTTPError) as e:
        check_schedule(schedule)
    assert e.value.status == 400
    assert "cron" in e.value.message or "preset" in e.value.message


def test_timestamps_end_in_z_and_round_trip() -> None:
    text = iso(NOON)
    assert text == "2026-11-26T12:30:00.000Z"
    assert parse_iso(text) == NOON


def test_fault_specs_parse() -> None:
    rule = Faults.parse("429 POST /api/jobs/* count=3 retry-after=2")
    assert (rule.kind, rule.method, rule.path, rule.count, rule.retry_after) == ("429", "POST", "/api/jobs/*", 3, 2)
    assert Faults.parse("kill rate=0.5 delay=1").delay == 1.0
    for bad in ("teapot GET *", "429 GET * bogus=1", "503 GET * rate=2", ""):
        with pytest.raises(ValueError):
            Faults.parse(bad)


def test_fault_counts_run_out() -> None:
    faults = Faults(seed=0)
    faults.add("500 GET /api/jobs/* count=2")
    hits = [faults.match("GET", "/api/jobs/ns") is not None for _ in range(4)]
    assert hits == [True, True, False, False]
    assert faults.match("POST", "/api/jobs/ns") is None


def test_mount_paths_are_translated_in_arguments(tmp_path: Path) -> None:
    mounts = [Mount("/data/sub", tmp_path / "b"), Mount("/data", tmp_path / "a")]
    assert translate("/data/entry.py", mounts) == f"{tmp_path}/a/entry.py"
    assert translate("/data/sub/x", mounts) == f"{tmp_path}/b/x"
    assert translate("--out=/data", mounts) == f"--out={tmp_path}/a"
    assert translate("/database/x", mounts) == "/database/x"  # a longer name is not the mount
    assert translate("/srv/data/x", mounts) == "/srv/data/x"  # nor a path that merely contains it


def test_flavors_give_their_hardware_variables_and_gpu_counts() -> None:
    assert flavor_env("cpu-basic") == {"CPU_CORES": "2", "MEMORY": "16Gi", "ACCELERATOR": "none"}
    assert flavor_env("a10g-largex4") == {"CPU_CORES": "48", "MEMORY": "184Gi", "ACCELERATOR": "a10g-largex4"}
    assert [gpu_count(f) for f in ("cpu-upgrade", "a100-large", "a10g-largex4", "h200x8", "nope")] == [0, 1, 4, 8, 0]


def test_sandbox_mode_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_sandbox.ENV_MODE, raising=False)
    assert _sandbox.mode_from(None) == "auto"
    monkeypatch.setenv(_sandbox.ENV_MODE, "OFF")
    assert (_sandbox.mode_from(None), _sandbox.mode_from("on")) == ("off", "on")
    with pytest.raises(ValueError, match=r"sandbox 'yes'.*auto, on, off"):
        _sandbox.mode_from("yes")
    assert _sandbox.resolve("off") == (False, None)


def test_sandbox_command_binds_the_system_read_only_and_volumes_at_their_paths(tmp_path: Path) -> None:
    layout = _sandbox.Layout(tmp_path / "root", hostname="r-job")
    layout.binds = [
        _sandbox.Bind(tmp_path / "v0", "/data", read_only=False),
        _sandbox.Bind(tmp_path / "v1", "/mnt/in"),
    ]
    argv = _sandbox.command(layout, ["uv", "run", "/data/entry.py"])
    args = " ".join(argv)
    assert f"--bind {tmp_path}/root /" in args and "--die-with-parent" in argv and "--unshare-pid" in argv
    assert f"--bind {tmp_path}/v0 /data" in args and f"--ro-bind {tmp_path}/v1 /mnt/in" in args
    assert "/etc/shadow" not in args and "/etc/passwd" not in args and "--ro-bind /etc /etc" not in args
    assert "/home" not in args and "--bind /usr" not in args  # the system is read-only, homes are not there
    assert argv[-4:] == ["--", "uv", "run", "/data/entry.py"]
    assert _sandbox.covered("/usr/lib/python3", []) and not _sandbox.covered("/root/.pyenv", ["/etc"])


def test_sandbox_where_bubblewrap_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sandbox, "unavailable", lambda: "bubblewrap needs Linux, this is darwin")
    boxed, notice = _sandbox.resolve("auto")
    assert not boxed and notice is not None
    assert "host processes" in notice and "darwin" in notice and "\n" not in notice  # one line
    with pytest.raises(_sandbox.SandboxUnavailable, match=r"cannot run here: bubblewrap needs Linux.*sandbox='off'"):
        _sandbox.resolve("on")


def test_gpus_option_of_the_emulator_command() -> None:
    from hfremote.cli import _gpus

    assert (_gpus(None), _gpus("none"), _gpus("4"), _gpus("0, 2")) == (None, [], 4, ["0", "2"])


def test_overlay_upper_layer_read_as_changes(tmp_path: Path) -> None:
    """The kernel's overlayfs format, made by hand: files, a whiteout, an opaque and a moved folder."""
    import os
    import stat

    from hfremote.emulator._volumes import _overlay_changes

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for rel, text in [
        ("same.txt", "s"),
        ("gone.txt", "g"),
        ("old/a.txt", "a"),
        ("old/b.txt", "b"),
        ("src/x/y.txt", "y"),
    ]:
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(text)
    upper.mkdir()
    (upper / "same.txt").write_text("s")  # copied up (opened for writing) but unchanged
    st = (lower / "same.txt").stat()
    os.utime(upper / "same.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    (upper / "new.txt").write_text("n")
    try:
        os.mknod(upper / "gone.txt", stat.S_IFCHR | 0o600, 0)  # a whiteout
        (upper / "old").mkdir()
        (upper / "old" / "b.txt").write_text("b2")
        os.setxattr(upper / "old", "trusted.overlay.opaque", b"y")
        (upper / "dst").mkdir()
        os.setxattr(upper / "dst", "trusted.overlay.redirect", b"/src")
        os.mknod(upper / "src", stat.S_IFCHR | 0o600, 0)
    except (PermissionError, OSError) as e:
        pytest.skip(f"needs root and trusted xattrs here: {e}")
    add, delete = _overlay_changes(lower, upper, "p/")
    assert sorted(dest for _, dest in add) == ["p/dst/x/y.txt", "p/new.txt", "p/old/b.txt"]
    assert delete == ["p/gone.txt", "p/old/a.txt", "p/src/x/y.txt"]
