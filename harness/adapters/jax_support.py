"""What the JAX-based adapters (Flax, Keras 3 on JAX) share: threads, compile accounting and the compilation cache.

Threads: with ``BNPARITY_THREADS=1`` (the default) ``limit_xla_threads`` sets the XLA CPU one-thread
flag before jaxlib starts its backend; other counts leave XLA's own threading.

Compile accounting: one ``jax.monitoring`` listener per worker process records every trace,
lowering and backend compile, so an adapter can report how many programs a case compiled and how
long that took, apart from its compute. Persistent-cache hits are counted apart: a hit still
runs inside ``backend_compile_duration`` but costs a file read, not a compilation.

Compilation cache: ``BNPARITY_JAX_CACHE_DIR`` (tox sets it to a folder inside each environment)
turns on JAX's persistent compilation cache. A hit returns the executable that compiling the same
program with the same options would produce, so results are unchanged; a re-run skips most of its
compilation. JAX releases without a CPU cache, or without one of the options, leave it off.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from harness.adapters.devices import thread_count

# The XLA CPU recipe for one intra-op thread (jax-ml/jax#743, #1539): Eigen ops stay on the calling
# thread. XLA has no thread-count flag. (The recipe in those issues also carries the bare word
# ``intra_op_parallelism_threads=1``: XLA_FLAGS ignores words without ``--``, as it does any other.)
ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


def limit_xla_threads() -> bool:
    """With one thread asked for, add the one-thread flag to ``XLA_FLAGS`` (flags already there are kept).

    Returns whether XLA_FLAGS can still take effect: False when JAX was imported before (an
    ``--in-process`` run after another JAX adapter), where nothing is changed.
    """
    if "jax" in sys.modules:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if thread_count() == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {ONE_THREAD_XLA_FLAGS}".strip()
    return True


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_log: list[tuple[str, float, str]] = []
_listening = False


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event in COMPILE_EVENTS:
        _log.append((event, duration, str(kwargs.get("fun_name", ""))))


def _on_event(event: str, **kwargs: Any) -> None:
    if event == CACHE_HIT_EVENT:
        _log.append((event, 0.0, ""))


def watch() -> int:
    """Start watching compilations; pass the returned mark to ``compiled_since``."""
    global _listening
    if not _listening:  # once per process: several adapter objects share it in an --in-process run
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _listening = True
    return len(_log)


def compiled_since(mark: int) -> dict[str, Any]:
    """Compiles, persistent-cache hits, seconds spent and program names since ``mark``."""
    new = _log[mark:]
    backend = [n for e, _, n in new if e.endswith("backend_compile_duration")]
    hits = sum(1 for e, _, _ in new if e == CACHE_HIT_EVENT)
    out: dict[str, Any] = {"compiles": len(backend) - hits, "compile_s": sum(d for _, d, _ in new),
                           "compiled": sorted(set(backend))}
    if hits:
        out["compile_cache_hits"] = hits
    return out


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in ``BNPARITY_JAX_CACHE_DIR``; the folder, or None."""
    cache = os.environ.get("BNPARITY_JAX_CACHE_DIR")
    if not cache:
        return None
    import jax

    try:
        jax.config.update("jax_compilation_cache_dir", cache)
    except AttributeError:  # a JAX without a persistent cache
        return None
    # BN programs compile in ~0.1 s and are small: cache them all (the defaults skip both)
    for option, value in (("jax_persistent_cache_min_compile_time_secs", 0.0),
                          ("jax_persistent_cache_min_entry_size_bytes", 0)):
        try:
            jax.config.update(option, value)
        except AttributeError:
            pass
    return cache
