"""Run CPython's own executor tests (Lib/test/test_concurrent_futures.py) against hfremote.Executor.

    uv run python scripts/cpython_executor_tests.py             # prints passed / failed / errors / skipped
    uv run python scripts/cpython_executor_tests.py -k Wait -v  # only the tests whose id holds "Wait"

CPython's test module is not part of this repository: Debian publishes it in `libpython3.11-testsuite`
(3.11.2). This script fetches that package once with `apt-get download` (no install, no root needed
for the download itself), unpacks the one file into a cache folder (and `test.support`, from
`libpython3.11-stdlib`, when this interpreter has none), starts an `hfremote emulator` on loopback in a
process of its own (so that the tests' `support.reap_children()` never reaps the emulator's jobs), and
runs, in a fresh interpreter pointed at it:

- the Executor mixins exactly as CPython builds its ThreadPool/ProcessPool test classes, with its own
  `create_executor_tests(mixin, executor_mixins=(HfRemoteMixin,))`, where the only change is the mixin
  that picks the executor (`executor_type = hfremote.Executor`): ExecutorTest, WaitTests,
  AsCompletedTests, ExecutorShutdownTest;
- the pool-specific classes' own tests that test the Executor interface (`test_map_chunksize`), and
  every other one as a skip with its reason (pool internals, objects of the caller's memory that a job
  cannot reach, child interpreters that import the executor from concurrent.futures by name).

A failed test is run once more (as pytest-rerunfailures does in the project's suite; reruns are
listed). It prints the counts and exits 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

from _emulator_process import start_emulator

TOKEN = "hf_cpython_executor_tests_0123456789"

PACKAGE = "libpython3.11-testsuite"
SUPPORT_PACKAGE = "libpython3.11-stdlib"
TEST_FILE = "usr/lib/python3.11/test/test_concurrent_futures.py"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hfremote" / "cpython-tests"

# The mixins CPython applies to every executor, run as they are.
MIXINS = ("ExecutorTest", "WaitTests", "AsCompletedTests", "ExecutorShutdownTest")

_CHILD = (
    "runs a child interpreter that imports the executor from concurrent.futures by its class name and "
    "expects a call's print on its own stdout (a job's output goes to the job's log; and at exit hfremote "
    "cancels the jobs a process never waited for, as documented, where a pool finishes them)"
)
_CALLER_MEMORY = "the calls share {} with the test: a job runs in another machine and cannot reach the caller's memory"
_THREADS = "counts ThreadPoolExecutor._threads or their names: a thread pool's internals"
_PROCESSES = "a process pool's internals (_processes, mp_context, max_tasks_per_child, its queues)"
_INITIALIZER = "initializer= is an option of the pools, not of the Executor interface: a job runs its calls only"
SKIPS: dict[str, str] = {
    "ExecutorShutdownTest.test_interpreter_shutdown": _CHILD,
    "ExecutorShutdownTest.test_submit_after_interpreter_shutdown": _CHILD,
    "ExecutorShutdownTest.test_hang_gh83386": _CHILD,
    "ThreadPoolExecutorTest.test_map_submits_without_iteration": _CALLER_MEMORY.format("a list")
    + " (eager submission: tests/integration/test_executor.py)",
    "ThreadPoolExecutorTest.test_default_workers": (
        "ThreadPoolExecutor's default, min(32, cpu_count + 4); hfremote's is 16, as map's max_parallel: "
        "jobs do not run on the local CPUs"
    ),
    "ThreadPoolExecutorTest.test_saturation": _THREADS + "; " + _CALLER_MEMORY.format("a threading.Semaphore"),
    "ThreadPoolExecutorTest.test_idle_thread_reuse": _THREADS,
    "ThreadPoolExecutorTest.test_hang_global_shutdown_lock": (
        "makes a ThreadPoolExecutor and a fork ProcessPoolExecutor by name"
    ),
    "ThreadPoolExecutorTest.test_executor_map_current_future_cancel": _CALLER_MEMORY.format(
        "a threading.Event and a list"
    )
    + " (map's cancel on timeout: tests/integration/test_executor.py)",
    "ThreadPoolShutdownTest.*": _THREADS + " (and names ThreadPoolExecutor itself)",
    "ThreadPoolWaitTests.test_pending_calls_race": _CALLER_MEMORY.format("a threading.Event"),
    "ProcessPoolExecutorTest.test_max_workers_too_large": "Windows' process limit",
    "ProcessPoolExecutorTest.test_traceback": (
        "expects concurrent.futures.process._RemoteTraceback as the cause; hfremote's is hfremote.RemoteTraceback "
        "(the job's traceback text, as the cause of the original exception type)"
    ),
    "ProcessPoolExecutorTest.test_ressources_gced_in_workers": _CALLER_MEMORY.format("a multiprocessing Manager"),
    "ProcessPoolExecutorTest.*": _PROCESSES,
    "ProcessPoolShutdownTest.*": _PROCESSES,
    "ExecutorDeadlockTest.*": (
        "a process pool's crashes (BrokenProcessPool, mp_context); hfremote's equivalents (an unpicklable "
        "argument, a job that dies) are in tests/integration/test_executor.py"
    ),
    "InitializerMixin.*": _INITIALIZER,
    "FailingInitializerMixin.*": _INITIALIZER,
}
# The pool-specific classes' tests that test the Executor interface itself.
RUN_ALSO = {"ProcessPoolExecutorTest.test_map_chunksize"}
NOT_EXECUTOR = ("FutureTests",)  # tests of concurrent.futures.Future itself: no executor in them


def _run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _unpack(package: str, folder: Path, members: list[str], into: Path) -> str:
    """apt-get download `package` into `folder`, copy `members` (paths inside it) under `into`; its version."""
    try:
        _run(["apt-get", "download", "-q", package], folder)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"could not fetch {package} with `apt-get download` ({e}); try `apt-get update` first") from e
    (deb,) = glob.glob(str(folder / f"{package}_*.deb"))
    tree = folder / f"{package}-tree"
    _run(["dpkg-deb", "-x", deb, str(tree)], folder)
    for member in members:
        source, target = tree / member, into / Path(member).name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy(source, target)
    return Path(deb).name.split("_")[1]


def fetch() -> tuple[Path, str]:
    """The folder with test_concurrent_futures.py (and a `test` package with `support`, if this interpreter
    has none), downloaded once; and the Debian version it came from."""
    root = _CACHE / "3.11"
    stamp = root / "version"
    if not stamp.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise SystemExit(f"CPython's tests come from Debian's {PACKAGE}: this needs apt-get and dpkg-deb")
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            made = Path(tmp) / "files"
            made.mkdir()
            release = _unpack(PACKAGE, Path(tmp), [TEST_FILE], made)
            shutil.rmtree(root / "files", ignore_errors=True)
            os.replace(made, root / "files")
        stamp.write_text(release)
    if not _has_support() and not (root / "support" / "test" / "support").exists():
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            made = Path(tmp) / "test"
            made.mkdir()
            members = ["usr/lib/python3.11/test/__init__.py", "usr/lib/python3.11/test/support"]
            _unpack(SUPPORT_PACKAGE, Path(tmp), members, made)
            (root / "support").mkdir(exist_ok=True)
            os.replace(made, root / "support" / "test")
    return root, stamp.read_text().strip()


def _has_support() -> bool:
    try:
        importlib.import_module("test.support")
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="pattern", default="", help="run only the tests whose id contains this")
    parser.add_argument("-v", dest="verbose", action="store_true", help="one line per test")
    parser.add_argument("--inner", help=argparse.SUPPRESS)  # the folder, in the child interpreter
    args = parser.parse_args()
    if args.inner:
        return inner(Path(args.inner), args.pattern, args.verbose)

    root, release = fetch()
    with tempfile.TemporaryDirectory(prefix="hfremote-cpython-") as tmp:
        # As many jobs running at once as the tests' executors allow (5): the platform runs what it is given.
        proc, endpoint = start_emulator(Path(tmp) / "state", ["--token", TOKEN, "--max-running", "8"])
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFREMOTE_"))}
            env |= {
                "HF_ENDPOINT": endpoint,
                "HF_TOKEN": TOKEN,
                "HF_HOME": str(Path(tmp) / "hf_home"),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "CPYTHON_TESTS_RELEASE": release,
            }
            command = [sys.executable, __file__, "--inner", str(root)]
            command += [*(["-k", args.pattern] if args.pattern else []), *(["-v"] if args.verbose else [])]
            return subprocess.run(command, env=env, cwd=tmp).returncode
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def _reason(class_name: str, method: str) -> str | None:
    return SKIPS.get(f"{class_name}.{method}") or SKIPS.get(f"{class_name}.*")


def build_suite(module: Any, mixin: type, pattern: str) -> tuple[unittest.TestSuite, list[str]]:
    """The test classes, as CPython builds them for each executor; and what was left out, with why."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    notes = []
    for name in MIXINS:
        module.create_executor_tests(getattr(module, name), executor_mixins=(mixin,))
        built = f"{mixin.__name__[: -len('Mixin')]}{name[:-5] if name.endswith(('Mixin', 'Tests')) else name[:-4]}Test"
        cls = getattr(module, built)
        for method in loader.getTestCaseNames(cls):
            reason = _reason(name, method)
            if reason is not None:
                setattr(cls, method, unittest.skip(reason)(getattr(cls, method)))
        suite.addTests(loader.loadTestsFromTestCase(cls))
    # The pool-specific classes: only the tests they define themselves (the mixins' are above).
    mixin_names = {m for name in MIXINS for m in loader.getTestCaseNames(getattr(module, name))}
    for name in (
        "ThreadPoolExecutorTest",
        "ThreadPoolShutdownTest",
        "ThreadPoolWaitTests",
        "ProcessPoolExecutorTest",
        "ProcessPoolShutdownTest",
        "ExecutorDeadlockTest",
        "InitializerMixin",
        "FailingInitializerMixin",
    ):
        source = getattr(module, name)
        methods = {m: getattr(source, m) for m in vars(source) if m.startswith("test") and m not in mixin_names}
        body: dict[str, Any] = {}
        for method, fn in methods.items():
            reason = None if f"{name}.{method}" in RUN_ALSO else _reason(name, method)
            body[method] = fn if reason is None else unittest.skip(reason)(fn)
        cls = type(f"HfRemote_{name}", (mixin, module.BaseTestCase), body)
        suite.addTests(loader.loadTestsFromTestCase(cls))
    for name in NOT_EXECUTOR:
        count = len(loader.getTestCaseNames(getattr(module, name)))
        notes.append(f"{name} ({count} tests): tests of concurrent.futures.Future itself, no executor: not run")
    if pattern:
        suite = unittest.TestSuite(t for t in _flatten(suite) if pattern in t.id())
    return suite, notes


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for test in suite:
        out.extend(_flatten(test) if isinstance(test, unittest.TestSuite) else [test])  # type: ignore[list-item]
    return out


def warm_up(hfremote: Any) -> None:
    """Start hfremote's engine and its worker threads once, before the tests: each test's tearDown checks
    that it leaves as many threads as it found (`threading_helper.threading_cleanup`), and waits a second
    when the engine's pools grow during the test."""
    with hfremote.Executor(max_workers=8) as ex:
        for future in [ex.submit(abs, -i) for i in range(8)]:
            future.result()
        sleeping = [ex.submit(time.sleep, 60) for _ in range(4)]
        deadline = time.monotonic() + 60
        while any(f.stage == "QUEUED" for f in sleeping) and time.monotonic() < deadline:
            time.sleep(0.05)
        for future in sleeping:
            future.cancel()


def inner(root: Path, pattern: str, verbose: bool) -> int:
    """In the child interpreter: build the suite and run it against hfremote.Executor on the emulator."""
    if (root / "support").exists():
        sys.path.insert(0, str(root / "support"))
    sys.path.insert(0, str(root / "files"))
    import hfremote

    module = importlib.import_module("test_concurrent_futures")

    class HfRemoteMixin(module.ExecutorMixin):  # type: ignore[misc,name-defined]
        executor_type = hfremote.Executor

    suite, notes = build_suite(module, HfRemoteMixin, pattern)
    warm_up(hfremote)
    module.setUpModule()
    started = time.monotonic()
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2 if verbose else 1).run(suite)
    reruns: list[str] = []
    failed = [test for test, _ in result.failures + result.errors if isinstance(test, unittest.TestCase)]
    if failed:  # one rerun of each failed test, as the project's pytest suite does
        again = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(unittest.TestSuite(failed))
        still = {t.id() for t, _ in again.failures + again.errors}
        reruns = [f"{t.id()}: {'failed again' if t.id() in still else 'passed on rerun'}" for t in failed]
        result.failures = [(t, s) for t, s in result.failures if t.id() in still]
        result.errors = [(t, s) for t, s in result.errors if t.id() in still]
    unittest.doModuleCleanups()
    elapsed = time.monotonic() - started
    run = result.testsRun
    failures, errors, skipped = len(result.failures), len(result.errors), len(result.skipped)
    passed = run - failures - errors - skipped
    release = os.environ.get("CPYTHON_TESTS_RELEASE", "?")
    print(
        f"\nCPython {release} test_concurrent_futures against hfremote.Executor on the emulator: {passed} passed, "
        f"{failures} failed, {errors} errors, {skipped} skipped in {elapsed:.0f} s"
    )
    for test, reason in result.skipped:
        print(f"  skipped {test.id().split('.', 1)[-1]}: {reason}")
    for note in notes:
        print(f"  {note}")
    for line in reruns:
        print(f"  rerun {line}")
    return 0 if failures == errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
