"""A hard time bound for answer checks that works from any thread and any process.

math-verify bounds its own time with SIGALRM, which only works in the main thread of the main
interpreter: from a reward thread, a data-loader worker or an async server it raises or, worse,
silently does nothing (math-verify issues #11, #50, #55). And a pathological answer such as
`9^{9^{9^9}}` hangs inside one C-level big-integer operation that no signal can interrupt anyway.

So checks run in worker processes and the caller waits on a socket with a deadline. When the
deadline passes, the worker is killed (SIGKILL always works) and a replacement is started in the
background. Workers are reused across calls, so sympy and math-verify are imported once, not per
check.

Where the platform allows (Linux, macOS), workers are forked from a "zygote": one subprocess that
imports and warms up the checking code once, then forks a ready worker in a few milliseconds
whenever one is needed. Without fork, each worker is its own subprocess (about a second to start).
Either way they are plain subprocesses rather than `multiprocessing` children, so they can be
started from daemonic processes too.

Protocol: one JSON line per request `{"fn": "module:attr", "args": [...]}`, one JSON line per reply
`{"ok": result}` or `{"error": "Type: message"}`. Only this module writes requests, so `fn` is never
model output; model output only ever travels as a JSON string argument.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The math check's own module, imported (and warmed up) by every worker before it reports ready.
DEFAULT_PRELOAD = ("aha.tasks.math.equivalence",)
_CAN_FORK = hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


class TimedOut(Exception):
    """The call did not finish within its time bound; its worker was killed."""


class WorkerError(Exception):
    """The worker could not start, died, or the called function raised (message says which)."""


class _Channel:
    """Newline-delimited JSON over a connected stream socket, reads bounded by a deadline."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise WorkerError("math worker died") from exc

    def recv(self, deadline: float | None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimedOut()
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                raise TimedOut()
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                raise WorkerError("math worker died (out of memory or killed)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise WorkerError("math worker sent a malformed reply") from exc
        return message if isinstance(message, dict) else {"error": "malformed reply"}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _child_env() -> dict[str, str]:
    src_root = str(Path(__file__).resolve().parents[3])  # the folder that holds the `aha` package
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
    # one thread per worker: BLAS/OpenMP pools would only compete with the caller for cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def _start_process(entry: str, config: dict[str, Any], startup_timeout: float
                   ) -> tuple[subprocess.Popen, _Channel]:
    """A subprocess running `entry(config)` with a socket to us; returns once it reports ready."""
    ours, theirs = socket.socketpair()
    config = {**config, "fd": theirs.fileno()}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import aha.tasks.math.timeout as t; t.{entry}()", json.dumps(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=_child_env(), pass_fds=[theirs.fileno()],
        )
    finally:
        theirs.close()
    channel = _Channel(ours)
    try:
        hello = channel.recv(time.monotonic() + startup_timeout)
    except (TimedOut, WorkerError) as exc:
        proc.kill()
        proc.wait()
        channel.close()
        raise WorkerError(f"math worker did not start within {startup_timeout:g} s") from exc
    if "error" in hello:
        proc.kill()
        proc.wait()
        channel.close()
        raise WorkerError(f"math worker failed to start: {hello['error']}")
    return proc, channel


class _Worker:
    """The parent's handle on one worker: its channel, and a way to kill it."""

    def __init__(self, channel: _Channel, pid: int, proc: subprocess.Popen | None = None):
        self.channel = channel
        self.proc = proc
        self.owner = os.getpid()  # the process that started it (see WorkerPool._check_fork)
        self.pidfd: int | None = None
        if proc is None and hasattr(os, "pidfd_open"):
            try:
                # a forked worker is not our child: a pidfd names exactly it, so a kill can never hit
                # another process that reused its pid
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None
        self.pid = pid

    def call(self, fn: str, args: Sequence[Any], timeout: float | None) -> Any:
        self.channel.send({"fn": fn, "args": list(args)})
        reply = self.channel.recv(None if timeout is None else time.monotonic() + timeout)
        if "error" in reply:
            raise WorkerError(str(reply["error"]))
        return reply.get("ok")

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pidfd is not None:
            ready, _, _ = select.select([self.pidfd], [], [], 0)  # readable once the process exits
            return not ready
        return True

    def kill(self) -> None:
        try:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.release_handles()

    def release_handles(self) -> None:
        self.channel.close()
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None


class _Zygote:
    """A warmed-up subprocess that forks new workers on request."""

    def __init__(self, preload: Sequence[str], memory_limit_mb: int | None, startup_timeout: float):
        self.proc, self.channel = _start_process(
            "zygote_main", {"preload": list(preload), "memory_limit_mb": memory_limit_mb}, startup_timeout)

    def spawn(self, timeout: float = 30.0) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.channel.sock, [b"fork\n"], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise WorkerError("math worker zygote died") from exc
        finally:
            theirs.close()
        try:
            reply = self.channel.recv(time.monotonic() + timeout)
        except TimedOut as exc:
            ours.close()
            raise WorkerError("math worker zygote did not answer") from exc
        if "pid" not in reply:
            ours.close()
            raise WorkerError(f"math worker zygote failed: {reply.get('error')}")
        return _Worker(_Channel(ours), int(reply["pid"]))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.channel.close()  # the zygote exits when its socket closes; the kill makes sure
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


class WorkerPool:
    """Up to `size` reusable worker processes; `call` runs a function in one with a hard deadline.

    size: most workers alive at once (= most calls running in parallel); more callers wait.
    preload: modules each worker imports before it is used; a module's `warm_up()` is called if it
        has one, so first-call costs (sympy, parser tables) never count against a deadline.
    memory_limit_mb: address-space limit of each worker (Linux), so `10^{10^{10}}` fails with
        MemoryError instead of eating the machine; None for no limit.
    startup_timeout: seconds the first worker (or the zygote) may take to import its modules.
    fork: fork workers from a warmed-up zygote (fast replacement); False starts each worker as
        its own subprocess. Ignored where fork is unavailable.

    Thread-safe. Fork-aware: a forked child never uses its parent's workers, it starts its own.
    """

    def __init__(self, size: int = 2, preload: Sequence[str] = DEFAULT_PRELOAD,
                 memory_limit_mb: int | None = 2048, startup_timeout: float = 120.0, fork: bool = True):
        if size < 1:
            raise ValueError("WorkerPool size must be >= 1")
        self.size = size
        self.preload = tuple(preload)
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout = startup_timeout
        self.fork = fork and _CAN_FORK
        self._cond = threading.Condition()
        self._spawn_lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._idle: list[_Worker] = []
        self._live = 0
        self._pid = os.getpid()
        self._closed = False
        self.timeouts = 0  # calls that hit their deadline (their workers were killed)
        atexit.register(self.close)

    def call(self, fn: str, *args: Any, timeout: float | None = 5.0) -> Any:
        """Run `module:function(*args)` in a worker and return its (JSON) result.

        fn: "module:attr" of a function importable in the worker; args: JSON-serialisable values.
        timeout: seconds the call may run once it has a worker (not counting the start-up of a new
            one); None waits forever. Raises TimedOut (the worker is killed and replaced in the
            background) or WorkerError (the function raised, or the worker died).
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

    def warm(self, n: int = 1) -> None:
        """Have at least `n` workers (at most `size`) ready now, so that later calls do not wait for
        their start-up. Raises WorkerError when a worker cannot start."""
        held = []
        try:
            for _ in range(min(n, self.size)):
                held.append(self._acquire())
        finally:
            for worker in held:
                self._release(worker, True)

    def close(self) -> None:
        """Kill the idle workers and the zygote; busy workers are killed when their call returns."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        if os.getpid() != self._pid:
            return
        for worker in idle:
            worker.kill()
        with self._spawn_lock:
            if self._zygote is not None:
                self._zygote.kill()
                self._zygote = None

    # -------------------------------------------------------------------------------- internals

    def _check_fork(self) -> None:
        # Called with the lock held. After a fork the inherited workers belong to the parent: drop
        # our copies of their handles without killing them, and start afresh.
        if os.getpid() != self._pid:
            for worker in self._idle:
                worker.release_handles()
            self._idle, self._live, self._pid, self._closed = [], 0, os.getpid(), False
            self._spawn_lock = threading.Lock()
            self._zygote = None

    def _new_worker(self) -> _Worker:
        if not self.fork:
            proc, channel = _start_process(
                "worker_main", {"preload": list(self.preload), "memory_limit_mb": self.memory_limit_mb},
                self.startup_timeout)
            return _Worker(channel, proc.pid, proc)
        with self._spawn_lock:
            if self._zygote is None or not self._zygote.alive():
                if self._zygote is not None:
                    self._zygote.kill()
                self._zygote = _Zygote(self.preload, self.memory_limit_mb, self.startup_timeout)
            return self._zygote.spawn()

    def _acquire(self) -> _Worker:
        with self._cond:
            self._check_fork()
            self._closed = False
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.release_handles()
                    self._live -= 1
                if self._live < self.size:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return self._new_worker()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            if worker.owner != os.getpid():
                return  # acquired before a fork; this process never counted it
            if healthy and not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
            self._live -= 1
            self._cond.notify()
            replace = not self._closed
        worker.kill()
        if replace:
            self._start_spare()

    def _start_spare(self) -> None:
        # A killed worker is replaced at once in the background, so the check after a pathological
        # one finds a ready worker.
        with self._cond:
            if self._closed or self._live >= self.size:
                return
            self._live += 1

        def start() -> None:
            try:
                worker = self._new_worker()
            except Exception:  # noqa: BLE001 - a later call starts one itself and reports the error
                with self._cond:
                    self._live -= 1
                    self._cond.notify()
                return
            self._release(worker, True)

        threading.Thread(target=start, name="aha-math-worker-start", daemon=True).start()


_SHARED: WorkerPool | None = None
_SHARED_LOCK = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool the math tasks use (created on first use; a forked child gets its own).

    Its size is $AHA_MATH_WORKERS (default 2).
    """
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            size = int(os.environ.get("AHA_MATH_WORKERS", "2"))
            _SHARED = WorkerPool(size=max(1, size))
        return _SHARED


def call_with_timeout(fn: str, *args: Any, timeout: float | None = 5.0) -> Any:
    """`shared_pool().call(fn, *args, timeout=timeout)`."""
    return shared_pool().call(fn, *args, timeout=timeout)


# ------------------------------------------------------------------------ worker and zygote side


def _prepare(config: dict[str, Any], channel: _Channel) -> bool:
    """Silence stdout, apply the memory limit, import and warm up the preloads; report failure."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a library's print() must never reach a channel
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
        channel.send({"error": f"{type(exc).__name__}: {exc}"})
        return False
    return True


def _serve(channel: _Channel) -> None:
    """Answer requests until the parent closes the channel."""
    functions: dict[str, Any] = {}
    while True:
        try:
            request = channel.recv(None)
        except (WorkerError, TimedOut):
            return
        try:
            fn = request["fn"]
            if fn not in functions:
                module_name, _, attr = fn.partition(":")
                functions[fn] = getattr(importlib.import_module(module_name), attr)
            reply: dict[str, Any] = {"ok": functions[fn](*request.get("args", []))}
            json.dumps(reply)  # a result that is not JSON fails here, as an error reply
        except MemoryError:
            reply = {"error": "MemoryError: the expression is too large"}
        except RecursionError:
            reply = {"error": "RecursionError: the expression is nested too deeply"}
        except Exception as exc:  # noqa: BLE001 - the parent decides what a failure means
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        try:
            channel.send(reply)
        except WorkerError:
            return


def worker_main() -> None:
    """Entry point of a stand-alone worker subprocess (used where fork is unavailable)."""
    config = json.loads(sys.argv[1])
    channel = _Channel(socket.socket(fileno=config["fd"]))
    if _prepare(config, channel):
        channel.send({"ready": True})
        _serve(channel)


def zygote_main() -> None:
    """Entry point of the zygote: warm up once, then fork a worker for every socket it is sent."""
    import gc

    config = json.loads(sys.argv[1])
    control = _Channel(socket.socket(fileno=config["fd"]))
    if not _prepare(config, control):
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked workers are reaped automatically
    gc.freeze()  # keep the warmed-up objects out of collections, so forks share their pages
    control.send({"ready": True})
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control.sock, 64, 4)
        except OSError:
            return
        if not fds:
            return  # the parent is gone
        for fd in fds:
            pid = os.fork()
            if pid == 0:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                try:
                    _serve(_Channel(socket.socket(fileno=fd)))
                finally:
                    os._exit(0)
            os.close(fd)
            control.send({"pid": pid})
