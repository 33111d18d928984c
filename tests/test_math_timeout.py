"""The time bound on answer checks: it holds in threads and in (daemonic) worker processes.

The mechanism tests use a pool that preloads nothing and calls `time:sleep`, so they are quick and
do not depend on which inputs make sympy slow. The end-to-end tests feed math-verify inputs that
really hang it (checked by hand: each runs for minutes without a bound).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from aha.tasks.base import Example
from aha.tasks.math.equivalence import is_equivalent, nesting_depth
from aha.tasks.math.tasks import AIMETask
from aha.tasks.math.timeout import TimedOut, WorkerError, WorkerPool, shared_pool

# generous ceiling on how long a test waits for a bounded call to come back; never reached when the
# bound works, and the test fails (instead of hanging the suite) when it does not
NO_HANG = 60


@pytest.fixture(scope="module")
def bare_pool():
    pool = WorkerPool(size=2, preload=())
    yield pool
    pool.close()


def test_result_comes_back(bare_pool):
    # functions are named "module:attr" and results come back as JSON values
    assert bare_pool.call("math:gcd", 12, 18, timeout=10) == 6
    assert bare_pool.call("os.path:join", "a", "b", timeout=10) == os.path.join("a", "b")


def test_timeout_kills_the_worker_and_the_next_call_works(bare_pool):
    with pytest.raises(TimedOut):
        bare_pool.call("time:sleep", 30, timeout=0.3)
    assert bare_pool.timeouts >= 1
    # the killed worker is replaced by a fresh one on demand
    assert bare_pool.call("math:gcd", 4, 6, timeout=10) == 2


def test_exception_in_function_keeps_the_worker(bare_pool):
    with pytest.raises(WorkerError, match="ZeroDivisionError"):
        bare_pool.call("operator:truediv", 1, 0, timeout=10)
    with pytest.raises(WorkerError, match="ModuleNotFoundError"):
        bare_pool.call("no_such_module_xyz:f", timeout=10)
    assert bare_pool.call("operator:add", 2, 3, timeout=10) == 5


def test_timeout_from_worker_threads(bare_pool):
    # SIGALRM-based timeouts cannot work here: these calls all run outside the main thread
    def slow(_):
        try:
            bare_pool.call("time:sleep", 30, timeout=0.3)
        except TimedOut:
            return "timed out"
        return "finished"

    with ThreadPoolExecutor(max_workers=3) as ex:
        futures = [ex.submit(slow, i) for i in range(3)]
        results = [f.result(timeout=NO_HANG) for f in futures]
    assert results == ["timed out"] * 3
    assert threading.current_thread() is threading.main_thread()


def _call_in_child(queue):
    # runs in a daemonic multiprocessing worker, which may not start multiprocessing children of
    # its own; the pool uses plain subprocesses, so it still works
    pool = WorkerPool(size=1, preload=())
    try:
        pool.call("time:sleep", 30, timeout=0.3)
        queue.put("finished")
    except TimedOut:
        queue.put("timed out")
    finally:
        pool.close()


def test_timeout_from_a_daemonic_worker_process():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_call_in_child, args=(queue,), daemon=True)
    proc.start()
    try:
        assert queue.get(timeout=NO_HANG) == "timed out"
    finally:
        proc.join(timeout=NO_HANG)


PATHOLOGICAL = [
    # (reference, answer a model might box) -- each hangs sympy/math-verify without a bound
    ("1", "9^{9^{9^{9}}}"),  # a tower of powers: one enormous integer power
    ("1", "(x+1)^{100000}"),  # expanding a huge polynomial power
]


def test_deep_nesting_is_refused_before_sympy():
    # math-verify's parser is exponential in nesting depth (50 parentheses never finish): such an
    # answer is wrong at once, without a worker
    result = is_equivalent("1", "(" * 50 + "1" + ")" * 50, timeout=0.5)
    assert (result.equal, result.error) == (False, "answer nested too deeply to compare")
    # a reference that is itself nested allows the same depth in the answer
    assert nesting_depth("\\frac{1}{\\frac{1}{\\frac{1}{2}}}") == 3


@pytest.fixture(scope="module")
def warm_shared_pool():
    pool = shared_pool()
    pool.warm(2)  # both workers start in parallel, outside any deadline
    return pool


@pytest.mark.parametrize("gold, pred", PATHOLOGICAL)
def test_pathological_answer_is_wrong_timed_out(warm_shared_pool, gold, pred):
    result = is_equivalent(gold, pred, timeout=0.5)
    assert (result.equal, result.method, result.error) == (False, "symbolic", "timed out")


def test_verify_from_a_thread_reports_timed_out(warm_shared_pool):
    # the whole task path, called from a reward thread: the verdict is "wrong, timed out"
    task = AIMETask(data=[], timeout=0.5)
    example = Example(id="x", prompt=[], answer="1", meta={})
    completion = "The answer is \\boxed{9^{9^{9^{9}}}}."
    with ThreadPoolExecutor(max_workers=1) as ex:
        verdict = ex.submit(task.verify, completion, example).result(timeout=NO_HANG)
    assert (verdict.correct, verdict.format_ok, verdict.error) == (False, True, "wrong, timed out")
    # and the next check (on a fresh worker) is graded normally
    assert task.verify("\\boxed{\\sqrt{1}}", example).correct
    assert warm_shared_pool.timeouts >= 1


def test_without_fork_each_worker_is_a_subprocess():
    # the fallback where fork is unavailable: same behaviour, slower replacement
    pool = WorkerPool(size=1, preload=(), fork=False)
    try:
        with pytest.raises(TimedOut):
            pool.call("time:sleep", 30, timeout=0.3)
        assert pool.call("math:gcd", 9, 12, timeout=10) == 3
    finally:
        pool.close()


def _gcd_in_forked_child(pool, queue):
    queue.put(pool.call("math:gcd", 10, 4, timeout=10))


def test_forked_child_starts_its_own_workers(bare_pool):
    # a child forked while the parent holds warm workers must not talk to them (their sockets are
    # the parent's): it starts its own, and the parent's workers keep working
    bare_pool.warm(1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_gcd_in_forked_child, args=(bare_pool, queue))
    proc.start()
    try:
        assert queue.get(timeout=NO_HANG) == 2
    finally:
        proc.join(timeout=NO_HANG)
    assert bare_pool.call("math:gcd", 10, 15, timeout=10) == 5
