"""A hard time bound for answer checks that works from any thread and any process.

math-verify bounds its own time with SIGALRM, which only works in the main thread of the main
interpreter: from a reward thread, a data-loader worker or an async server it raises or, worse,
silently does nothing (math-verify issues #11, #50, #55). And a pathological answer such as
`9^{9^{9^9}}` hangs inside one C-level big-integer operation that no signal can interrupt anyway.

So the check runs in a separate worker process and the caller waits on a pipe with a deadline. If
the deadline passes, the worker is killed (SIGKILL always works) and replaced lazily by a fresh one.
Workers are plain subprocesses (not `multiprocessing` children), so they can be started from
daemonic processes too, and they are reused across calls so the cost of importing sympy and
math-verify is paid once per worker, not once per check.

Protocol: one JSON line per request `{"fn": "module:attr", "args": [...]}` on the worker's stdin, one
JSON line per answer `{"ok": result}` or `{"error": "Type: message"}` on a private copy of its
stdout. Only this module writes requests, so `fn` is never model output; model output only ever
travels as a JSON string argument.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The math check's own module, imported (and warmed up) by every worker before it reports ready.
DEFAULT_PRELOAD = ("aha.tasks.math.equivalence",)


class TimedOut(Exception):
    """The call did not finish within its time bound; its worker was killed."""


class WorkerError(Exception):
    """The worker could not start, died, or the called function raised (message says which)."""


class _Worker:
    """One worker subprocess and the parent's end of its pipes."""

    def __init__(self, preload: Sequence[str], memory_limit_mb: int | None, startup_timeout: float):
        src_root = str(Path(__file__).resolve().parents[3])  # the folder that holds the `aha` package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
        # one thread per worker: BLAS/OpenMP pools would only compete with the caller for cores
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        config = json.dumps({"preload": list(preload), "memory_limit_mb": memory_limit_mb})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import aha.tasks.math.timeout as t; t.worker_main()", config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            close_fds=True,
        )
        self.pid = os.getpid()  # the process that owns this worker (see WorkerPool._check_fork)
        self._buffer = b""
        try:
            hello = self._read_message(time.monotonic() + startup_timeout)
        except TimedOut as exc:
            self.kill()
            raise WorkerError(f"math worker did not start within {startup_timeout:g} s") from exc
        if "error" in hello:
            self.kill()
            raise WorkerError(f"math worker failed to start: {hello['error']}")

    def call(self, fn: str, args: Sequence[Any], timeout: float | None) -> Any:
        request = json.dumps({"fn": fn, "args": list(args)}).encode() + b"\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError("math worker died") from exc
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = self._read_message(deadline)
        if "error" in reply:
            raise WorkerError(str(reply["error"]))
        return reply.get("ok")

    def _read_message(self, deadline: float | None) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimedOut()
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimedOut()
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerError("math worker died (out of memory or killed)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise WorkerError("math worker sent a malformed reply") from exc
        return message if isinstance(message, dict) else {"error": "malformed reply"}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


class WorkerPool:
    """Up to `size` reusable worker processes; `call` runs a function in one with a hard deadline.

    size: most workers alive at once (= most calls running in parallel); more callers wait.
    preload: modules each worker imports before reporting ready; a module's `warm_up()` is called
        if it has one, so first-call costs (sympy, parser tables) never count against a deadline.
    memory_limit_mb: address-space limit of each worker (Linux), so `10^{10^{10}}` fails with
        MemoryError instead of eating the machine; None for no limit.
    startup_timeout: seconds a new worker may take to import its modules.

    Thread-safe. Fork-aware: a forked child never uses its parent's workers, it starts its own.
    """

    def __init__(self, size: int = 2, preload: Sequence[str] = DEFAULT_PRELOAD,
                 memory_limit_mb: int | None = 2048, startup_timeout: float = 120.0):
        if size < 1:
            raise ValueError("WorkerPool size must be >= 1")
        self.size = size
        self.preload = tuple(preload)
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout = startup_timeout
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live = 0
        self._pid = os.getpid()
        self._closed = False
        self.timeouts = 0  # calls that hit their deadline (their workers were killed)
        atexit.register(self.close)

    def call(self, fn: str, *args: Any, timeout: float | None = 5.0) -> Any:
        """Run `module:function(*args)` in a worker and return its (JSON) result.

        fn: "module:attr" of a function importable in the worker; args: JSON-serialisable values.
        timeout: seconds the call may run once a worker is free (not counting a new worker's
            start-up); None waits forever. Raises TimedOut (the worker is killed and replaced
            later) or WorkerError (the function raised, or the worker died).
        """
        worker = self._acquire()
        healthy = False
        try:
            result = worker.call(fn, args, timeout)
            healthy = True
            return result
        except TimedOut:
            with self._cond:
                self.timeouts += 1
            raise
        except WorkerError:
            healthy = worker.alive()  # an exception inside the function leaves the worker usable
            raise
        finally:
            self._release(worker, healthy)

    def warm(self) -> None:
        """Start one worker now (if none is alive) so a later call does not wait for its start-up."""
        self._release(self._acquire(), True)

    def close(self) -> None:
        """Kill every idle worker; workers busy in other threads are killed when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        if os.getpid() == self._pid:
            for worker in idle:
                worker.kill()

    # -------------------------------------------------------------------------------- internals

    def _check_fork(self) -> None:
        # Called with the lock held. After a fork the inherited workers belong to the parent:
        # drop our copies of their pipes without killing them, and start afresh.
        if os.getpid() != self._pid:
            for worker in self._idle:
                worker.close_pipes()
            self._idle, self._live, self._pid, self._closed = [], 0, os.getpid(), False

    def _acquire(self) -> _Worker:
        with self._cond:
            self._check_fork()
            self._closed = False
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.close_pipes()
                    self._live -= 1
                if self._live < self.size:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self.preload, self.memory_limit_mb, self.startup_timeout)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            if worker.pid != os.getpid():
                return  # acquired before a fork; this process never counted it
            if healthy and not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
            self._live -= 1
            self._cond.notify()
        worker.kill()


_SHARED: WorkerPool | None = None
_SHARED_LOCK = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool the math tasks use (created on first use; a forked child gets its own)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            size = int(os.environ.get("AHA_MATH_WORKERS", "2"))
            _SHARED = WorkerPool(size=max(1, size))
        return _SHARED


def call_with_timeout(fn: str, *args: Any, timeout: float | None = 5.0) -> Any:
    """`shared_pool().call(fn, *args, timeout=timeout)`."""
    return shared_pool().call(fn, *args, timeout=timeout)


# ------------------------------------------------------------------------------------ worker side


def _resolve(fn: str, cache: dict[str, Any]) -> Any:
    if fn not in cache:
        module_name, _, attr = fn.partition(":")
        cache[fn] = getattr(importlib.import_module(module_name), attr)
    return cache[fn]


def worker_main() -> None:
    """Entry point of a worker process: serve requests from stdin until it closes."""
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    # replies go to a private copy of stdout; anything a library prints lands on stderr instead
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    limit = config.get("memory_limit_mb")
    if limit:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (int(limit) << 20, int(limit) << 20))
        except (ImportError, ValueError, OSError):
            pass
    try:
        for name in config.get("preload", []):
            module = importlib.import_module(name)
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                warm_up()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises WorkerError
        send({"error": f"{type(exc).__name__}: {exc}"})
        return
    send({"ready": True})
    functions: dict[str, Any] = {}
    for line in sys.stdin:
        try:
            request = json.loads(line)
            result = _resolve(request["fn"], functions)(*request.get("args", []))
            send({"ok": result})
        except MemoryError:
            send({"error": "MemoryError: the expression is too large"})
        except RecursionError:
            send({"error": "RecursionError: the expression is nested too deeply"})
        except Exception as exc:  # noqa: BLE001 - the parent decides what a failure means
            send({"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
