"""Shared pytest fixtures and helpers."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

from data.paths import shared_data_dir  # pylint: disable=g-import-not-at-top


# One persistent XLA compilation cache for the whole session, shared by the xdist workers and every launched run
# (they inherit the environment): the many runs that compile the same smoke programs (a run, its interrupted twin,
# the rerun that resumes it) compile each once. A cached executable is the one compiled, so results are unchanged.
_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_OWN_CACHE: list[str] = []


def pytest_configure(config):
  del config
  if not os.environ.get(_CACHE_ENV):  # The controller (or a plain run) makes it; workers inherit it.
    _OWN_CACHE.append(tempfile.mkdtemp(prefix='reason-small-xla-cache-'))
    os.environ[_CACHE_ENV] = _OWN_CACHE[0]
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def pytest_unconfigure(config):
  del config
  for path in _OWN_CACHE:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """The ../shared/data folder; skips the test with a reason when it is absent."""
  path = shared_data_dir()
  if not path.is_dir():
    pytest.skip(f'real data folder {path} is absent (set REASON_SHARED_DATA to use another)')
  return path


# Tiny graphs: XLA:CPU's cheaper LLVM settings cut compile time, which dominates the model tests and the launched
# runs (the Sudoku smoke run: 12 s instead of 29 s on a 2-core AMD EPYC). In-process through `fast_jit`, launched
# runs through XLA_FLAGS. Float results move in the last bits (the smoke run's final loss by 4e-8), so bit-exact
# comparisons pair runs that both have them.
_FAST_CPU_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
_FAST_CPU_XLA_FLAGS = ' '.join(f'--{k}={str(v).lower()}' for k, v in _FAST_CPU_COMPILE.items())


def launch_env(env: dict[str, str] | None = None) -> dict[str, str]:
  """os.environ plus `env` for a launched run: on the CPU, the cheaper compile settings added to `env`'s XLA_FLAGS."""
  full_env = dict(os.environ, **(env or {}))
  full_env.setdefault('JAX_PLATFORMS', 'cpu')
  full_env['XLA_FLAGS'] = f"{full_env.get('XLA_FLAGS', '')} {_FAST_CPU_XLA_FLAGS}".strip()
  return full_env


def launch(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
  """Runs `python launch.py *args` from the repo root on the CPU, as a user would, compiled with `launch_env`'s
  cheaper settings."""
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO_ROOT, env=launch_env(env), capture_output=True,
                        text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
  """The output of a launch that must have succeeded (its tail is the failure message otherwise)."""
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-4000:]
  return out


def fast_jit(fn, **kwargs):
  """jax.jit with the cheaper compile settings on CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == 'cpu':
    kwargs['compiler_options'] = _FAST_CPU_COMPILE
  return jax.jit(fn, **kwargs)
