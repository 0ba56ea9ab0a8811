"""Lets XLA:CPU reuse a step's scratch memory instead of mapping it fresh each step (glibc).

XLA:CPU allocates a step's scratch buffer (103 MB for the MLM peer bench's
BERT) on every call and frees it at the end. A
block that large is mapped fresh by glibc each time, so every step faulted in
~25,000 new pages, a third of the CPU train step. Two changes make the memory
come back warm instead:
  * glibc: no mapped blocks and no trimming of the heap's free top (`mallopt`),
    so a freed block stays in the heap for the next step;
  * JAX: CPU computations run inline on the calling thread
    (`jax_cpu_enable_async_dispatch=False`). A worker thread allocates from its
    own arena, whose blocks over 64 MB are mapped whatever the settings; the
    main thread allocates from the main heap.
The costs: the process keeps its peak host memory until it exits, and on CPU
the host no longer prepares the next batch while a step runs (a few ms, against
steps of 50 ms and more). Multi-device CPU computations stay asynchronous.

`reuse_cpu_scratch_memory()` must run before JAX creates its CPU client (before
the first array or device query). Elsewhere than Linux/glibc it does nothing.
"""
import ctypes
import ctypes.util
import sys

from absl import logging
import jax

# <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # Largest int the call takes.


def _mallopt():
  """glibc's mallopt, or None where there is none (macOS, musl)."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
  except (OSError, AttributeError):
    return None
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return mallopt


def _jax_started() -> bool:
  """Whether JAX has created its backends (private API; False where it is missing)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def reuse_cpu_scratch_memory() -> bool:
  """Applies both settings; True when they took effect (False without glibc or after JAX started)."""
  if _jax_started():
    logging.warning('reuse_cpu_scratch_memory came after JAX started; left the settings as they are '
                    '(call it before the first JAX array or device query)')
    return False
  mallopt = _mallopt()
  if mallopt is None:
    return False
  if not (mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1):
    return False
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True
