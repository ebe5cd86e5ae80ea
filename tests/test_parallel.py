"""parallel_for, the loop under every native kernel: each task runs exactly once, whichever thread
takes it, and a thread that finishes its share takes what is left of a slower thread's."""

import numpy as np
import pytest

import tellme
from tellme import _core

pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("tasks", [0, 1, 2, 3, 7, 64, 1001])
def test_every_task_runs_once(threads, tasks):
    counts, by = _core.parallel_for_trace(tasks)
    np.testing.assert_array_equal(counts, np.ones(tasks, np.int32))
    assert set(by) <= set(range(threads))


def test_a_slow_thread_is_helped():
    """Task 0, the first of thread 0's share (tasks 0-31), sleeps. Static scheduling would leave
    tasks 1-31 waiting for it; here the other thread takes them."""
    previous = tellme.get_num_threads()
    tellme.set_num_threads(2)
    try:
        counts, by = _core.parallel_for_trace(64, slow_task=0, slow_ms=300)
    finally:
        tellme.set_num_threads(previous)
    np.testing.assert_array_equal(counts, np.ones(64, np.int32))
    if by[0] == 0:  # thread 0 slept on its first task: thread 1 ran everything else
        assert all(b == 1 for b in by[1:]), by
    else:  # thread 1 ran its share and took task 0 before thread 0 started: thread 0 ran 1-31
        assert all(b == 0 for b in by[1:32]) and all(b == 1 for b in by[32:]), by


def test_bad_arguments():
    with pytest.raises(ValueError, match="tasks"):
        _core.parallel_for_trace(-1)
    with pytest.raises(ValueError, match="slow_ms"):
        _core.parallel_for_trace(4, 0, 5000)
