"""One long-lived worker process per adapter: the fault boundary.

Built on pebble's ``ProcessPool`` (one worker per adapter): pebble kills a
task's process on timeout, reports a dead worker as ``ProcessExpired`` with
its exit code, and starts a replacement, which is exactly the contract we
need; ``concurrent.futures`` cannot kill a running task and marks the whole
pool broken when a worker dies.

Workers are started with the ``spawn`` method (a clean interpreter, no state
inherited from pytest), get the adapter's environment (``KERAS_BACKEND``,
``JAX_ENABLE_X64``, thread counts) before anything imports a framework, and
send their stdout and stderr to a log file whose tail is attached to a
``crashed`` or ``timeout`` outcome.

What pebble does not cover is handled here: a worker that exits with status 0 in the middle of a
case (``os._exit(0)``) is found by polling its process and reported ``crashed`` at once, not after
the case's time limit; any exception, ``KeyboardInterrupt`` and ``SystemExit`` included, comes back
as the case's ``raised`` outcome; a worker whose stdout/stderr the framework closed is replaced
after its case; and each worker leads its own process group, killed when the worker is shut
down, so a process the framework forked does not outlive the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.adapters.base import IN_WORKER, Observed, Raised, load_spec
from harness.schema import OutcomeStatus

DEFAULT_TIMEOUT = 300.0  # seconds per case; --case-timeout and a case's `timeout` override it
DEFAULT_THREADS = "1"
POLL_S = 0.25  # how often a waiting parent looks whether the worker running its case still exists
EXIT_GRACE_S = 1.0  # after the worker is gone, how long pebble gets to report it (it does for a nonzero status)


def worker_environment(adapter_env: dict[str, str], threads: str = DEFAULT_THREADS) -> dict[str, str]:
    """What a worker process sets before anything imports a framework: thread counts, then the adapter's own."""
    return {"BNPARITY_THREADS": threads, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", **adapter_env}


# -- inside the worker -----------------------------------------------------------

_ADAPTERS: dict[str, Any] = {}


def _worker_init(env: dict[str, str], log_path: str, pids_path: str) -> None:
    os.setpgid(0, 0)  # its own process group: whatever the framework forks goes when the worker is shut down
    with open(pids_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    os.environ.update(env)
    os.environ[IN_WORKER] = "1"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def worker_adapter(spec: str) -> tuple[Any, dict[str, Any]]:
    """The adapter for ``spec``, imported and set up once per worker process; call it inside a worker.

    The dict says which process it is and, the first time, how long the import and setup took.
    """
    info: dict[str, Any] = {"pid": os.getpid()}
    if spec not in _ADAPTERS:
        t0 = time.perf_counter()
        adapter = load_spec(spec)
        adapter.setup()
        _ADAPTERS[spec] = adapter
        info["import_s"] = time.perf_counter() - t0
    return _ADAPTERS[spec], info


def _run_task(spec: str, case, data, started: str | None = None) -> tuple[Observed, dict[str, Any]]:
    """One case in the worker. Nothing escapes as an exception: the parent always gets an Observed.

    ``info["case_s"]`` is what the case itself cost: the adapter's run (build, every step, eval), from
    after the framework import and adapter setup (``import_s``, a worker's first case only) to the
    answer being ready to send back.
    """
    if started:
        with open(started, "w") as f:
            f.write(str(os.getpid()))
    try:
        adapter, info = worker_adapter(spec)
        t0 = time.perf_counter()
        obs = adapter.run(case, data)
        info["case_s"] = time.perf_counter() - t0
    except BaseException as e:  # loading or setting up the adapter failed, or something escaped run()
        obs, info = Observed(raised=Raised.of(e, "setup")), {"pid": os.getpid()}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            info["broken"] = f"the framework closed the worker's {name}"
    return obs, info


# -- in the parent ---------------------------------------------------------------

@dataclass
class Outcome:
    """What came back from a worker: observed values, or crashed/timeout."""

    observed: Observed | None = None
    status: OutcomeStatus = OutcomeStatus.RETURNED
    message: str = ""
    exit_code: int | None = None
    stderr_tail: str = ""
    worker: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0  # the round trip: on a worker's first case, starting it and importing the framework too
    case_s: float | None = None  # the case alone, in the worker (None: no answer came back, or setup failed)


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class _Worker:
    pool: Any
    log: Path
    pids: Path  # every process this pool started (one per line): each leads its own process group
    started: Path  # the pid of the process that took the case in flight


class Workers:
    """Per-adapter worker pools, created on first use and closed at the end."""

    def __init__(self, log_dir: Path | None = None, in_process: bool = False,
                 threads: str = DEFAULT_THREADS, max_live: int = 3):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="bnparity-workers-"))
        self.in_process = in_process
        self.threads = threads
        self.max_live = max_live  # framework processes kept alive at once (memory: TF and JAX take ~0.5 GB each)
        self._workers: dict[str, _Worker] = {}

    def _pool(self, name: str, spec: str, env: dict[str, str]) -> _Worker:
        w = self._workers.pop(name, None)
        if w is None:
            from pebble import ProcessPool

            self._retire(keep=self.max_live - 1)

            self.log_dir.mkdir(parents=True, exist_ok=True)
            tag = os.environ.get("PYTEST_XDIST_WORKER", "main")
            log = self.log_dir / f"{name}-{tag}.log"
            pids = self.log_dir / f"{name}-{tag}.pids"
            pids.write_text("")
            pool = ProcessPool(max_workers=1, initializer=_worker_init,
                               initargs=(worker_environment(env, self.threads), str(log), str(pids)),
                               context=multiprocessing.get_context("spawn"))
            w = _Worker(pool, log, pids, self.log_dir / f"{name}-{tag}.task")
        self._workers[name] = w  # most recently used last
        return w

    def _retire(self, keep: int) -> None:
        """Close the least recently used workers beyond ``keep`` (cells come grouped by adapter)."""
        while len(self._workers) > keep:
            oldest = next(iter(self._workers))
            _shutdown(self._workers.pop(oldest))

    def submit(self, name: str, spec: str, env: dict[str, str], case, data, timeout: float):
        """Start one case in the adapter's worker; returns a function that waits for its ``Outcome``.

        The caller computes the oracle while the framework works.
        """
        t0 = time.perf_counter()
        if self.in_process:
            def wait_inline() -> Outcome:
                obs, info = _run_task(spec, case, data)
                return Outcome(obs, worker=info, wall_s=time.perf_counter() - t0, case_s=info.pop("case_s", None))

            return wait_inline
        w = self._pool(name, spec, env)
        offset = w.log.stat().st_size if w.log.exists() else 0
        w.started.unlink(missing_ok=True)
        future = w.pool.schedule(_run_task, args=(spec, case, data, str(w.started)), timeout=timeout)

        def wait() -> Outcome:
            from pebble import ProcessExpired

            try:
                obs, info = self._result(future, w)
                out = Outcome(obs, worker=info, case_s=info.pop("case_s", None))
            except FutureTimeout:
                out = Outcome(status=OutcomeStatus.TIMEOUT,
                              message=f"no answer within {timeout:g} s; worker killed and replaced")
            except ProcessExpired as e:
                out = Outcome(status=OutcomeStatus.CRASHED, exit_code=e.exitcode,
                              message=f"worker died ({_signal_name(e.exitcode)}); replaced")
            except _WorkerExited as e:
                out = Outcome(status=OutcomeStatus.CRASHED, exit_code=e.code,
                              message=f"worker exited ({_signal_name(e.code)}) in the middle of the case; replaced")
                self._discard(name)
            except Exception as e:  # the task could not even be sent or unpickled
                out = Outcome(status=OutcomeStatus.CRASHED, message=f"worker error: {type(e).__name__}: {e}")
            if out.status != OutcomeStatus.RETURNED:
                time.sleep(0.05)  # let the dying process flush what it wrote
                out.stderr_tail = self._tail(w.log, offset)
            elif out.worker.get("broken"):  # the case's answer stands; the next case gets a new worker
                self._discard(name)
            out.wall_s = time.perf_counter() - t0
            return out

        return wait

    @staticmethod
    def _result(future, w: _Worker) -> Any:
        """``future.result()``, except that a worker that exited with status 0 (which pebble takes for a
        planned exit and never reports) raises ``_WorkerExited`` within a second, instead of the case
        waiting out its time limit. Any other status is pebble's to report (``ProcessExpired``)."""
        gone_at = None
        while True:
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                if future.done():  # the task's own time limit (pebble sets a TimeoutError)
                    raise
            if gone_at is None:
                if _exit_status(w.started) == 0:
                    gone_at = time.perf_counter()
            elif time.perf_counter() - gone_at > EXIT_GRACE_S:
                raise _WorkerExited(0)

    def _discard(self, name: str) -> None:
        w = self._workers.pop(name, None)
        if w is not None:
            w.pool.stop()
            _kill_groups(w)

    def call(self, name: str, spec: str, env: dict[str, str], fn: Callable[..., Any], args: tuple,
             timeout: float) -> Any:
        """Run ``fn(*args)`` in the adapter's worker process and return its result.

        ``fn`` must be a picklable module-level function; inside the worker, ``worker_adapter(spec)``
        gives it the adapter. Errors come back as exceptions: pebble's ``ProcessExpired`` for a dead
        worker, ``concurrent.futures.TimeoutError`` after ``timeout`` seconds (the worker is killed
        and replaced), or whatever ``fn`` raised.
        """
        if self.in_process:
            return fn(*args)
        return self._pool(name, spec, env).pool.schedule(fn, args=args, timeout=timeout).result()

    @staticmethod
    def _tail(log: Path, offset: int, limit: int = 4000) -> str:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-limit:]

    def close(self) -> None:
        for w in self._workers.values():
            w.pool.close()
        for w in self._workers.values():
            _shutdown(w)
        self._workers.clear()


class _WorkerExited(Exception):
    def __init__(self, code: int):
        self.code = code


def _exit_status(started: Path) -> int | None:
    """The exit status of the worker that took the case, once it has exited; None while it runs (or before
    it took the case). 0 when pebble reaped it first: pebble fails the case itself for any other status."""
    try:
        pid = int(started.read_text())
    except (OSError, ValueError):
        return None
    try:  # WNOWAIT: read the status of the exited child and leave it for pebble to reap
        res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return 0
    if res is None:
        return None
    return res.si_status if res.si_code == os.CLD_EXITED else -res.si_status


def _kill_groups(w: _Worker) -> None:
    """SIGKILL the process group of every process the pool started (what the framework forked in them)."""
    try:
        pids = [int(p) for p in w.pids.read_text().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _shutdown(w: _Worker) -> None:
    """Let the worker finish and exit; kill it if it does not within 10 s; then kill what it left behind."""
    w.pool.close()
    try:
        w.pool.join(timeout=10)
    except Exception:
        w.pool.stop()
        w.pool.join()
    _kill_groups(w)
