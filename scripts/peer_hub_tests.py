"""Run huggingface_hub's own live Buckets/Xet tests against a fresh `hfremote emulator`.

    uv run python scripts/peer_hub_tests.py            # prints passed / failed / errors / skipped
    uv run python scripts/peer_hub_tests.py -- -x -k tree   # extra arguments go to pytest

The huggingface_hub release installed in this environment publishes, in its sdist on PyPI, the tests
its maintainers run against the Hub's staging server. This script downloads that sdist (once, into a
cache folder), changes only the constants of `tests/testing_constants.py` (the staging endpoint
becomes the emulator's address; the test users and their tokens are served by the emulator as they
are), starts an emulator on loopback with those users, runs the listed test files with the
installed huggingface_hub, prints the counts and exits 0 when nothing failed except the tests
listed in EXPECTED_FAILURES (which need what the emulator does not emulate: model/dataset repos,
enterprise orgs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from _emulator_process import start_emulator

TEST_FILES = (
    "test_buckets.py",
    "test_buckets_cli.py",
    "test_buckets_hf_file_system.py",
    "test_copy_files.py",
    "test_xet_upload.py",
    "test_bucket_live_follow.py",
)

# Tests that need what the emulator does not serve, with the reason (node id prefix -> reason).
_REPOS = "needs model/dataset repos (create_repo, upload_file, commits), which the emulator does not serve"
_FACTORY = "needs the repo_factory fixture of the suite's conftest.py (absent from the sdist) and model repos"
EXPECTED_FAILURES: dict[str, str] = {
    "tests/test_buckets.py::test_create_bucket_enterprise_org": (
        "an enterprise org's buckets are private by default: an enterprise-plan setting the emulator has not"
    ),
    "tests/test_buckets.py::test_copy_files_repo_to_bucket_with_revision": _FACTORY,
    "tests/test_buckets.py::test_copy_files_bucket_to_repo_raises": _FACTORY,
    "tests/test_buckets_hf_file_system.py::TestHfFileSystemBucketRW::test_copy_repo_to_bucket": _REPOS,
    "tests/test_buckets_hf_file_system.py::TestHfFileSystemBucketRW::test_copy_bucket_to_repo_is_not_supported": _REPOS,
    "tests/test_copy_files.py::test_commit_copy_file": _REPOS,
    "tests/test_copy_files.py::test_copy_files_repo_to_repo": _REPOS,
    "tests/test_copy_files.py::test_cp_upload_file_to_repo": _REPOS,
    "tests/test_copy_files.py::test_cp_upload_to_repo_": _REPOS,
    "tests/test_copy_files.py::test_cp_download_repo_": _REPOS,
    "tests/test_copy_files.py::test_cp_remote_repo_to_": _REPOS,
    "tests/test_xet_upload.py::TestXetUpload::": _REPOS + " (the class's fixture creates a model repo)",
    "tests/test_xet_upload.py::TestXetE2E::test_hf_xet_download_with_new_session_api": _REPOS,
}

_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hfremote" / "peer-suite"


def sdist_tests(release: str) -> Path:
    """The `tests` folder of huggingface_hub's sdist for `release`, downloaded from PyPI once."""
    root = _CACHE / f"huggingface_hub-{release}"
    if (root / "tests" / "testing_constants.py").exists():
        return root
    _CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_CACHE) as tmp:
        # pip (run by uvx) is the ordinary client that fetches an sdist without building it.
        subprocess.run(
            [
                "uvx",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                f"huggingface_hub=={release}",
            ],
            check=True,
        )
        (archive,) = Path(tmp).glob("huggingface_hub-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(Path(tmp) / f"huggingface_hub-{release}", root)
    return root


def constants(text: str) -> dict[str, str]:
    """The string constants of testing_constants.py."""
    return dict(re.findall(r'^([A-Z_]+) = "([^"]*)"', text, flags=re.M))


def adapt(text: str, endpoint: str) -> str:
    """testing_constants.py with the staging endpoint replaced by the emulator's address, nothing else."""
    return re.sub(r'^ENDPOINT_STAGING = "[^"]*"', f'ENDPOINT_STAGING = "{endpoint}"', text, flags=re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--release", default=version("huggingface_hub"), help="huggingface_hub release (default: the installed one)"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    source = sdist_tests(args.release)
    with tempfile.TemporaryDirectory(prefix="hfremote-peer-") as tmp:
        work = Path(tmp)
        shutil.copytree(source / "tests", work / "tests")
        shutil.copy(source / "pyproject.toml", work / "pyproject.toml")  # markers and pytest options
        # The sdist omits tests/__init__.py (the tests import each other relatively) and conftest.py, whose
        # fixtures serve model/dataset repos; only the one name imported from it is stubbed.
        (work / "tests" / "__init__.py").touch()
        if not (work / "tests" / "conftest.py").exists():
            (work / "tests" / "conftest.py").write_text("RepoFactory = object  # a type hint in test_hf_file_system\n")
        original = (work / "tests" / "testing_constants.py").read_text()
        c = constants(original)
        users = [
            (c["USER"], c["TOKEN"]),
            (c["OTHER_USER"], c["OTHER_TOKEN"]),
            (c["ENTERPRISE_USER"], c["ENTERPRISE_TOKEN"]),
        ]
        options = [arg for name, token in users for arg in ("--user", f"{name}:{token}")]
        options += ["--org", f"{c['ENTERPRISE_ORG']}:{c['ENTERPRISE_USER']}"]
        proc, endpoint = start_emulator(work / "state", options)
        try:
            (work / "tests" / "testing_constants.py").write_text(adapt(original, endpoint))
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) or k == "HF_XET_CACHE"
            }
            # As the suite's own pytest-env settings do, plus a private HF_HOME (no saved login applies),
            # except HUGGINGFACE_CO_STAGING: it would point the client's default endpoint (the CLI's) at
            # the staging server instead of HF_ENDPOINT, the emulator.
            env |= {
                "HF_TOKEN": "",
                "HUGGING_FACE_HUB_TOKEN": "",
                "HF_ENDPOINT": endpoint,
                "HF_HOME": str(work / "hf_home"),
                "DISABLE_SYMLINKS_IN_WINDOWS_TESTS": "1",
            }
            started = time.monotonic()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "addopts=",
                    "-W",
                    "error::FutureWarning",
                    "--strict-markers",
                    "-rfE",
                    "--timeout=120",
                    *[f"tests/{name}" for name in TEST_FILES],
                    *args.pytest_args,
                ],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - started
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
    out = result.stdout
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", summary)}
    failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    unexpected = [n for n in failing if not any(n.startswith(p) for p in EXPECTED_FAILURES)]
    print(
        f"huggingface_hub {args.release} peer suite against the emulator: "
        f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
        f"{counts.get('errors', counts.get('error', 0))} errors, {counts.get('skipped', 0)} skipped in {elapsed:.0f} s"
    )
    for name in failing:
        reason = next((r for p, r in EXPECTED_FAILURES.items() if name.startswith(p)), "UNEXPECTED")
        print(f"  {name}: {reason}")
    if unexpected or result.returncode not in (0, 1):
        print(out[-30000:])  # pytest's report, for what was not expected
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
