"""A failed joblib task's remote traceback, as the job writes it, starts at the task once the trampoline's
and joblib's frames are left out (pure text: no emulator)."""

from __future__ import annotations

from hfremote._joblib import _without_batch_frames
from hfremote.errors import RemoteTraceback

JOB_TRACEBACK = """Traceback (most recent call last):
  File "/work/hfremote/_joblib.py", line 55, in call_batch
    return batch()
  File "/env/lib/python3.11/site-packages/joblib/parallel.py", line 607, in __call__
    return [func(*args, **kwargs) for func, args, kwargs in self.items]
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/env/lib/python3.11/site-packages/joblib/parallel.py", line 607, in <listcomp>
    return [func(*args, **kwargs) for func, args, kwargs in self.items]
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/home/me/search.py", line 4, in score
    return helper(x)
  File "/env/lib/python3.11/site-packages/joblib/parallel.py", line 90, in helper
    raise ValueError("bad")
ValueError: bad
"""


def test_the_trampolines_and_joblibs_frames_are_left_out() -> None:
    error = ValueError("bad")
    error.__cause__ = RemoteTraceback(JOB_TRACEBACK)
    assert _without_batch_frames(error) is error
    assert isinstance(error.__cause__, RemoteTraceback)
    # the task's frames stay, even one in a file named like joblib's (it is not joblib's __call__)
    assert error.__cause__.text == (
        "Traceback (most recent call last):\n"
        '  File "/home/me/search.py", line 4, in score\n'
        "    return helper(x)\n"
        '  File "/env/lib/python3.11/site-packages/joblib/parallel.py", '
        "line 90, in helper\n"
        '    raise ValueError("bad")\n'
        "ValueError: bad\n"
    )


def test_an_error_without_a_remote_traceback_is_left_alone() -> None:
    error = KeyError("x")
    assert _without_batch_frames(error) is error and error.__cause__ is None
