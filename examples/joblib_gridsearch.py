"""scikit-learn's GridSearchCV and cross_validate with each fit running as a Hugging Face job.

    uv run examples/joblib_gridsearch.py

`import hfremote.joblib` registers joblib's `backend="hfremote"`; inside `parallel_config(...)`, whatever
scikit-learn hands to joblib (the n_jobs loops of searches, cross-validation, ensembles) runs as jobs,
at most `n_jobs` at a time. With no Hugging Face token this runs on hfremote's embedded emulator of the
Jobs platform; with HF_TOKEN set, the same code runs on Hugging Face Jobs (a few cents of cpu-basic time).
Needs joblib and scikit-learn here (`pip install "hfremote[joblib]" scikit-learn`; in a clone of hfremote
they are in the dev group, which `uv run` installs); the jobs install the same versions themselves.
"""

from __future__ import annotations

import time

from joblib import parallel_config
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.svm import SVC

import hfremote.joblib  # noqa: F401  (registers backend="hfremote")


def main() -> None:
    X, y = load_digits(return_X_y=True)  # ships with scikit-learn: nothing to download
    grid = {"C": [1.0, 10.0], "gamma": [0.001, 0.01]}

    # 4 candidates x 3 folds = 12 fits, each one job; other remote() options go here too (timeout, env, ...)
    with parallel_config(backend="hfremote", n_jobs=6, flavor="cpu-basic", timeout="20m"):
        started = time.monotonic()
        search = GridSearchCV(SVC(), grid, cv=3).fit(X, y)
        print(f"best {search.best_params_}: accuracy {search.best_score_:.3f} ({time.monotonic() - started:.0f}s)")

        scores = cross_validate(SVC(**search.best_params_), X, y, cv=3)
        print("cross-validated accuracy of the best model:", [round(float(s), 3) for s in scores["test_score"]])

    # The same search with joblib's default backend, in this process, finds the same parameters.
    local = GridSearchCV(SVC(), grid, cv=3).fit(X, y)
    assert local.best_params_ == search.best_params_, (local.best_params_, search.best_params_)
    print("same best parameters as the default backend:", local.best_params_)


if __name__ == "__main__":
    main()
