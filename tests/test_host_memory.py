"""train/host_memory.py: a CPU step's scratch memory comes back warm instead of mapped fresh."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

# A jitted function whose XLA scratch buffer is far above glibc's 64 MB arena limit: ten
# live [2048, 2048] float32 intermediates (16 MB each) feed one reduction. It prints the
# median page faults of 7 calls: now and then a small allocation lands in the freed block
# between two calls, and the next call maps the whole buffer once more (seen in 1 run of
# 25); the median is what most steps cost.
_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {root!r})
    from train import host_memory
    applied = host_memory.reuse_cpu_scratch_memory() if {reuse} else False
    import jax, jax.numpy as jnp
    def f(x):
      parts = [jnp.sin(x * (i + 1.0)) for i in range(10)]
      return sum(jnp.sum(p @ parts[-1 - i]) for i, p in enumerate(parts))
    step = jax.jit(f)
    x = jnp.ones((2048, 2048), jnp.float32) / 2048
    step(x).block_until_ready()
    faults = []
    for _ in range(7):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      step(x).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, jax.config.read('jax_cpu_enable_async_dispatch'), sorted(faults)[3])
""")


def _run(reuse: bool) -> tuple[str, str, int]:
  out = subprocess.run([sys.executable, '-c', _SCRIPT.format(root=str(REPO_ROOT), reuse=reuse)],
                       capture_output=True, text=True, check=True, timeout=300)
  applied, asynchronous, median_faults = out.stdout.split()[-3:]
  return applied, asynchronous, int(median_faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings: Linux only')
def test_scratch_memory_is_reused_across_steps():
  applied, asynchronous, faults_reused = _run(reuse=True)
  assert (applied, asynchronous) == ('True', 'False')
  _, _, faults_default = _run(reuse=False)
  # By default each call faults in its whole scratch buffer (> 16,000 pages of 4 KB).
  assert faults_default > 16_000, faults_default
  assert faults_reused < faults_default / 10, (faults_reused, faults_default)


def test_late_call_says_it_came_too_late():
  script = (f'import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); import jax; jax.numpy.ones(2); '
            'from train import host_memory; print(host_memory.reuse_cpu_scratch_memory(), '
            'jax.config.read("jax_cpu_enable_async_dispatch"))')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.split()[-2:] == ['False', 'True']  # Refused, and dispatch left asynchronous.
  assert 'came after JAX started' in out.stderr
