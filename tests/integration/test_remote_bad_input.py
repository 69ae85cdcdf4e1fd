"""Bad options and arguments to @remote fail with a clear hfremote error before anything is created.

Each case fails either at decoration (`remote(...)`, `.options(...)`) or at submit; either way the
emulator must end with no job, no run folder in the `{user}/hfremote` bucket, and no write request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

import hfremote._calls
from hfremote import OptionsError, PicklingError, RemoteFunction, remote
from hfremote.emulator import Emulator

MISSING_SECRET = "HFREMOTE_TEST_MISSING_SECRET"
_MODULE_LOCK = threading.Lock()  # a global that cannot be pickled


def one_arg(x: int) -> int:
    return x + 1


def uses_module_lock(x: int) -> int:
    with _MODULE_LOCK:
        return x + 1


def generator(x: int) -> Iterator[int]:
    yield x


def deco(**options: Any) -> Callable[[], RemoteFunction[..., Any]]:
    return lambda: remote(**options)(one_arg)


@dataclass
class Case:
    id: str
    decorate: Callable[[], RemoteFunction[..., Any]]  # builds the remote function (may raise)
    error: type[Exception]
    keywords: tuple[str, ...]  # each must appear in the message (case-insensitive)
    call: Callable[[RemoteFunction[..., Any]], Any] | None = None  # None: the error is raised by `decorate`


def submit_one(f: RemoteFunction[..., Any]) -> Any:
    return f.submit(1)


def _volume(mount: str) -> str:
    return f"hf://datasets/org/data:{mount}"


CASES = [
    # -- flavor: checked against the platform's hardware list at submit ---------------------------------
    Case("unknown-flavor", deco(flavor="gpu-huge"), OptionsError, ("gpu-huge", "cpu-basic", "valid"), submit_one),
    Case(
        "unknown-flavor-via-options",
        lambda: remote(one_arg).options(flavor="nope-xl"),
        OptionsError,
        ("nope-xl", "cpu-basic"),
        submit_one,
    ),
    Case("empty-flavor", deco(flavor=""), OptionsError, ("flavor",)),
    # -- timeout ---------------------------------------------------------------------------------------
    Case("timeout-words", deco(timeout="2 hours"), OptionsError, ("timeout", "'2h'")),
    Case("timeout-negative-string", deco(timeout="-5"), OptionsError, ("timeout", "duration")),
    Case("timeout-zero-string", deco(timeout="0"), OptionsError, ("timeout", "at least one second")),
    Case("timeout-upper-unit", deco(timeout="2H"), OptionsError, ("timeout", "'2h'")),
    Case("timeout-empty", deco(timeout=""), OptionsError, ("timeout",)),
    Case("timeout-bool", deco(timeout=True), OptionsError, ("timeout=True",)),
    Case("timeout-negative-int", deco(timeout=-5), OptionsError, ("timeout",)),
    # -- the function and its arguments ----------------------------------------------------------------
    Case("generator", lambda: remote(generator), OptionsError, ("generator",)),
    Case(
        "unpicklable-argument",
        lambda: remote(one_arg),
        PicklingError,
        ("argument 'x'", "lock", "pickled"),
        lambda f: f.submit(threading.Lock()),
    ),
    Case(
        "unpicklable-global",
        lambda: remote(uses_module_lock),
        PicklingError,
        ("_MODULE_LOCK", "uses_module_lock", "pickled"),
        submit_one,
    ),
    Case(
        "too-many-arguments", lambda: remote(one_arg), TypeError, ("one_arg", "argument"), lambda f: f.submit(1, 2, 3)
    ),
    Case("missing-argument", lambda: remote(one_arg), TypeError, ("one_arg", "'x'"), lambda f: f.submit()),
    Case("unknown-keyword", lambda: remote(one_arg), TypeError, ("one_arg", "y"), lambda f: f.submit(1, y=2)),
    # -- secrets and env -------------------------------------------------------------------------------
    Case(
        "secret-missing-locally",
        deco(secrets=[MISSING_SECRET]),
        OptionsError,
        (MISSING_SECRET, "not set"),
        submit_one,
    ),
    Case("secret-bad-name", deco(secrets=["BAD-NAME"]), OptionsError, ("BAD-NAME", "environment variable")),
    Case("env-bad-name", deco(env={"1BAD": "x"}), OptionsError, ("1BAD", "environment variable")),
    Case("env-non-string", deco(env={"GOOD": 3}), OptionsError, ("GOOD", "string")),
    Case("env-secret-clash", deco(env={"TOKEN": "a"}, secrets={"TOKEN": "b"}), OptionsError, ("TOKEN", "both")),
    # -- volumes ---------------------------------------------------------------------------------------
    Case("mount-reserved", deco(volumes=[_volume("/hfremote")]), OptionsError, ("/hfremote", "run folder")),
    Case("mount-reserved-under", deco(volumes=[_volume("/hfremote/chunk")]), OptionsError, ("/hfremote",)),
    Case("mount-root", deco(volumes=[_volume("/")]), OptionsError, ("mount path",)),
    Case("mount-bad-mode", deco(volumes=["hf://buckets/org/b:/out:rx"]), OptionsError, ("unknown mode 'rx'", ":ro")),
    Case("mount-other-scheme", deco(volumes=["s3://x:/mnt"]), OptionsError, ("only hf://",)),
    Case("mount-relative", deco(volumes=[_volume("mnt")]), OptionsError, ("'mnt'", "absolute")),
    Case("mount-dotdot", deco(volumes=[_volume("/mnt/../data")]), OptionsError, ("mount path",)),
    Case(
        "mount-twice",
        deco(volumes=[_volume("/mnt"), "hf://org/model:/mnt/"]),
        OptionsError,
        ("share a mount path", "/mnt"),
    ),
    Case("mount-no-path", deco(volumes=["hf://datasets/org/data"]), OptionsError, ("mount path",)),
    Case("model-mount-rw", deco(volumes=["hf://org/model:/mnt:rw"]), OptionsError, ("read-only",)),
    # -- names and labels ------------------------------------------------------------------------------
    Case("name-too-long", deco(name="n" * 101), OptionsError, ("101", "100")),
    Case("name-blank", deco(name="  "), OptionsError, ("name",)),
    Case("label-reserved-prefix", deco(labels={"hfremote-run": "x"}), OptionsError, ("hfremote-run", "reserved")),
    Case("label-reserved-name", deco(labels={"name": "x"}), OptionsError, ("'name'", "reserved")),
    Case("label-value-dot", deco(labels={"team": "a.b"}), OptionsError, ("a.b", "letters, digits")),
    Case("label-key-long", deco(labels={"k" * 101: "v"}), OptionsError, ("101", "100")),
    Case("label-key-empty", deco(labels={"": "v"}), OptionsError, ("empty",)),
    # -- the rest --------------------------------------------------------------------------------------
    Case("attempts-zero", deco(attempts=0), OptionsError, ("attempts=0", "1 to 10")),
    Case("attempts-bool", deco(attempts=True), OptionsError, ("attempts",)),
    Case("retries-negative", deco(retries=-1), OptionsError, ("retries=-1", "0 to 9")),
    Case("retries-too-many", deco(retries=11), OptionsError, ("retries=11", "0 to 9")),
    Case("python-other-version", deco(python="3.9"), OptionsError, ("python='3.9'", "same")),
    Case("bad-dependency", deco(dependencies=["numpy>>=2"]), OptionsError, ("numpy>>=2", "requirement")),
    Case("dependency-not-a-string", deco(dependencies=[3]), OptionsError, ("requirement",)),
    Case("unknown-option", deco(flavour="cpu-basic"), OptionsError, ("flavour", "flavor")),
    Case("unknown-option-via-options", lambda: remote(one_arg).options(gpu=True), OptionsError, ("gpu", "valid")),
    Case("namespace-bad", deco(namespace="a/b"), OptionsError, ("namespace",)),
    Case("not-a-function", lambda: remote(42), OptionsError, ("function", "42")),  # type: ignore[call-overload]
    # -- platform limits, refused here rather than by the server after the upload -----------------------
    Case("timeout-over-30-days", deco(timeout=10**9), OptionsError, ("timeout", "30 days")),
    Case("timeout-31d", deco(timeout="31d"), OptionsError, ("timeout='31d'", "30 days")),
    Case("image-shell", deco(image="python:3.12; rm -rf /"), OptionsError, ("image", "container image")),
    Case("image-space", deco(image="python 3.12"), OptionsError, ("image",)),
    Case("volume-path-dotdot", deco(volumes=["hf://buckets/org/b/../../x:/mnt"]), OptionsError, ("path", "..")),
    Case("volume-source-dotdot", deco(volumes=["hf://datasets/../etc:/mnt"]), OptionsError, ("source",)),
    Case("volume-mount-nul", deco(volumes=[_volume("/mnt/\x00x")]), OptionsError, ("mount path", "NUL")),
    Case("volumes-a-string", deco(volumes="hf://org/model:/mnt"), OptionsError, ("volumes", "list")),
    Case("env-value-2mb", deco(env={"BIG": "x" * (2 << 20)}), OptionsError, ("BIG", "KB", "volumes")),
    Case("env-value-300kb", deco(env={"BIG": "x" * 300_000}), OptionsError, ("BIG", "KB")),
    Case("env-name-200kb", deco(env={"N" * 200_000: "x"}), OptionsError, ("env name",)),
    Case("env-total", deco(env={f"V{i}": "x" * 100_000 for i in range(8)}), OptionsError, ("in all", "KB")),
    Case(
        "secret-value-too-big",
        deco(secrets={"TOKEN": "x" * 300_000}),
        OptionsError,
        ("TOKEN", "KB"),
        submit_one,
    ),
    # -- wrong types: an OptionsError naming the option, never a raw Python error ----------------------
    Case("env-a-list", deco(env=["A=1"]), OptionsError, ("env=['A=1']", "dict")),
    Case("env-a-string", deco(env="A=1"), OptionsError, ("env='A=1'", "dict")),
    Case("labels-a-list", deco(labels=["team"]), OptionsError, ("labels=['team']", "dict")),
    Case("flavor-not-a-string", deco(flavor=3), OptionsError, ("flavor=3", "hardware")),
    Case("timeout-a-list", deco(timeout=[5]), OptionsError, ("timeout",)),
    Case("name-not-a-string", deco(name=5), OptionsError, ("name=5",)),
    Case("attempts-a-string", deco(attempts="3"), OptionsError, ("attempts='3'", "1 to 10")),
    # -- silently wrong before: string booleans, dict dependencies ---------------------------------------
    Case("detach-string", deco(detach="false"), OptionsError, ("detach='false'", "True or False")),
    Case("stream-logs-string", deco(stream_logs="false"), OptionsError, ("stream_logs", "True or False")),
    Case("detect-string", deco(detect_dependencies="false"), OptionsError, ("detect_dependencies", "True or False")),
    Case("dependencies-dict", deco(dependencies={"numpy": ">=2"}), OptionsError, ("dict", "'numpy>=2'")),
    Case("ship-not-a-module", deco(ship=["not a module"]), OptionsError, ("ship", "module name")),
    Case("ship-not-importable", deco(ship=["nothing_here_hfr"]), OptionsError, ("ship=", "imported"), submit_one),
    Case("pin-not-installed", deco(pin=["nothing_here_hfr"]), OptionsError, ("pin=", "nothing_here_hfr"), submit_one),
    Case("retries-and-attempts", deco(retries=1, attempts=2), OptionsError, ("attempts", "retries", "not both")),
    # -- map options -----------------------------------------------------------------------------------
    Case(
        "max-cost-nan",
        lambda: remote(one_arg),
        OptionsError,
        ("max_cost_usd=nan", "positive"),
        lambda f: list(f.map([1, 2], max_cost_usd=float("nan"))),
    ),
    Case(
        "max-cost-string",
        lambda: remote(one_arg),
        OptionsError,
        ("max_cost_usd='1'",),
        lambda f: list(f.map([1], max_cost_usd="1")),
    ),
    Case(
        "max-cost-negative",
        lambda: remote(one_arg),
        OptionsError,
        ("max_cost_usd",),
        lambda f: f.map([1], max_cost_usd=-1),
    ),
    Case(
        "map-progress-string", lambda: remote(one_arg), OptionsError, ("progress",), lambda f: f.map([1], progress="no")
    ),
    Case(
        "map-ordered-string", lambda: remote(one_arg), OptionsError, ("ordered",), lambda f: f.map([1], ordered="false")
    ),
    Case(
        "map-cost-negative",
        lambda: remote(one_arg),
        OptionsError,
        ("map_cost(-5)", "negative"),
        lambda f: f.map_cost(-5),
    ),
    Case("map-cost-bool", lambda: remote(one_arg), OptionsError, ("map_cost",), lambda f: f.map_cost(True)),
    Case("map-bad-option", lambda: remote(one_arg), OptionsError, ("detach",), lambda f: f.map([1], detach="no")),
    # -- open files: refused before they are read (/dev/zero never ends) --------------------------------
    Case(
        "argument-dev-zero",
        lambda: remote(one_arg),
        PicklingError,
        ("argument 'x'", "open file", "/dev/zero", "volumes"),
        lambda f: f.submit(open("/dev/zero", "rb")),  # noqa: SIM115
    ),
    Case(
        "argument-text-file",
        lambda: remote(one_arg),
        PicklingError,
        ("argument 'x'", "open file", "path"),
        lambda f: f.submit(open(__file__)),  # noqa: SIM115
    ),
]


def bucket_files(api: HfApi, bucket_id: str) -> list[str]:
    """Paths of the files in a bucket; [] when the bucket does not exist."""
    try:
        return [item.path for item in api.list_bucket_tree(bucket_id, recursive=True) if item.type == "file"]
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return []
        raise


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_before_anything_is_created(
    case: Case, remote_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MISSING_SECRET, raising=False)
    with pytest.raises(case.error) as caught:
        f = case.decorate()
        assert case.call is not None, f"{case.id}: expected {case.error.__name__} at decoration"
        case.call(f)
    if case.error is not TypeError:
        assert isinstance(caught.value, OptionsError)
    _check_message(str(caught.value), case.keywords)
    _check_nothing_created(remote_emulator)


def test_arguments_over_the_size_limit(remote_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hfremote._calls, "MAX_CALL_BYTES", 1000)
    f = remote(one_arg)
    assert f.local(1) == 2
    with pytest.raises(OptionsError) as caught:
        f.submit(b"x" * 5000)  # type: ignore[arg-type]
    _check_message(str(caught.value), ("limit", "volumes"))
    _check_nothing_created(remote_emulator)


def test_secret_values_never_show_in_reprs() -> None:
    f = remote(secrets={"API_KEY": "sk-verysecret-123", "HF_TOKEN": None})(one_arg)
    for text in (repr(f.settings), str(f.settings), repr(f.options(flavor="cpu-upgrade").settings), repr(f)):
        assert "sk-verysecret-123" not in text
    assert "API_KEY" in repr(f.settings) and "***" in repr(f.settings)


def _check_message(message: str, keywords: tuple[str, ...]) -> None:
    for word in keywords:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


def _check_nothing_created(emulator: Emulator) -> None:
    assert emulator.jobs() == []
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    assert bucket_files(api, f"{emulator.user}/hfremote") == []
    writes = [(method, path) for _, method, path, _ in emulator.requests() if method not in ("GET", "HEAD")]
    assert writes == [], f"write requests were sent: {writes}"
