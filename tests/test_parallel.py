"""parallel_for, the loop under every native kernel: each task runs exactly once, whichever thread
takes it, and a thread that finishes its share takes what is left of a slower thread's; with
automatic threads the team is the cores other programs leave free."""

import os

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


def test_auto_threads_use_the_cores_others_leave():
    """Automatic threads see other programs' load (a stand-in here, so that what else runs on the
    machine cannot change the result): with all but one core taken, every loop runs on the calling
    thread; with all free, the team is back (the other thread takes tasks while task 0 sleeps)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = tellme.runtime.thread_setting()
    _core.set_num_threads(2)
    _core.set_auto_threads(True)
    try:
        _core.set_others_for_test(cpus - 1.0)
        counts, by = _core.parallel_for_trace(64, slow_task=0, slow_ms=20)
        assert set(by) == {0} and _core.team()[1] == 1
        np.testing.assert_array_equal(counts, np.ones(64, np.int32))
        _core.set_others_for_test(cpus - 1.5)  # half a core left is not a core
        assert list(_core.parallel_for_trace(8)[1]) == [0] * 8
        _core.set_others_for_test(0.0)
        counts, by = _core.parallel_for_trace(64, slow_task=0, slow_ms=50)
        assert 1 in set(by) and _core.team()[1] == 2
        _core.set_auto_threads(False)  # a fixed count ignores the load
        _core.set_others_for_test(cpus - 1.0)
        assert 1 in set(_core.parallel_for_trace(64, slow_task=0, slow_ms=50)[1])
    finally:
        _core.set_others_for_test(-1)
        tellme.set_num_threads(before)


def test_auto_threads_from_several_callers():
    """Loops started by several threads at once, while automatic threads measure the load: every
    task of every loop runs once."""
    from concurrent.futures import ThreadPoolExecutor
    before = tellme.runtime.thread_setting()
    tellme.set_num_threads("auto")
    try:
        with ThreadPoolExecutor(4) as pool:
            for counts, _ in pool.map(lambda n: _core.parallel_for_trace(n), [64, 100, 257, 1000] * 4):
                np.testing.assert_array_equal(counts, np.ones(len(counts), np.int32))
    finally:
        tellme.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_has_a_pool_of_its_own():
    """After fork the parent's workers do not exist in the child: its loops start workers of
    their own, and every task still runs once."""
    previous = tellme.get_num_threads()
    tellme.set_num_threads(2)
    try:
        _core.parallel_for_trace(64)  # the parent's pool, with a worker
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if every task ran once, on both threads
            ok = False
            try:
                counts, by = _core.parallel_for_trace(64, slow_task=0, slow_ms=50)
                ok = list(counts) == [1] * 64 and set(by) == {0, 1}
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    finally:
        tellme.set_num_threads(previous)
