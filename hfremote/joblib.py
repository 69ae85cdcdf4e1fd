"""joblib's `backend="hfremote"`: `joblib.Parallel` (and so scikit-learn's `n_jobs`) runs its batches as jobs.

    import hfremote.joblib  # registers the backend with joblib
    from joblib import parallel_config

    with parallel_config(backend="hfremote", n_jobs=16, flavor="cpu-upgrade", timeout="30m"):
        GridSearchCV(SVC(), grid, cv=5).fit(X, y)

Keyword arguments other than joblib's own are `remote()` options, checked when the backend is made
(`parallel_config` raises OptionsError); `Parallel(backend="hfremote", flavor=...)` takes them too, for
that call. Each Parallel call is one hfremote run: every batch is a job of it, at most `n_jobs` at a
time (-1: 16); n_jobs=1 runs in this process, as with any joblib backend.
An error in a batch is raised as itself, with the remote traceback as its `__cause__`, after the call's
other jobs are cancelled; Ctrl-C cancels them too. Needs the `hfremote[joblib]` extra (joblib).
"""

from __future__ import annotations

from ._joblib import DEFAULT_JOBS, HFRemoteBackend, register

register()

__all__ = ["DEFAULT_JOBS", "HFRemoteBackend", "register"]
