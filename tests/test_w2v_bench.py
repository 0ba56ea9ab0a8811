"""bench/w2v_vs_gensim.py names the code that ran: NumPy's dispatch, held to AVX2 by --emulate-avx2."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / 'bench'
sys.path.insert(0, str(BENCH))
import w2v_vs_gensim  # pylint: disable=g-import-not-at-top,wrong-import-position

_PRINT_MACHINE = 'import sys; sys.path.insert(0, sys.argv[1]); import w2v_vs_gensim as b; print(b.machine_line())'


def _machine_line(extra_env: dict) -> str:
  """The bench's machine line from a fresh process (NumPy reads its dispatch settings at import)."""
  env = {k: v for k, v in os.environ.items()
         if k not in w2v_vs_gensim.AVX2_ENV and k != w2v_vs_gensim.EMULATED}
  done = subprocess.run([sys.executable, '-c', _PRINT_MACHINE, str(BENCH)], env={**env, **extra_env},
                        check=True, capture_output=True, text=True)
  return done.stdout.strip()


def test_emulate_avx2_holds_numpy_dispatch_on_an_avx512_cpu():
  try:
    flags = pathlib.Path('/proc/cpuinfo').read_text().split()
  except OSError:
    pytest.skip('no /proc/cpuinfo to read the CPU flags from')
  if 'avx512f' not in flags:
    pytest.skip('the CPU has no AVX-512 to hold back')
  native = _machine_line({})
  assert 'AVX-512 (NumPy' in native and 'dispatches AVX-512' in native and 'held' not in native
  held = _machine_line({**w2v_vs_gensim.AVX2_ENV, w2v_vs_gensim.EMULATED: '1'})
  assert 'dispatches AVX2' in held and held.endswith('[held to AVX2 by --emulate-avx2]')


def test_profile_times_every_part_of_the_step_and_puts_the_step_back():
  import w2v_profile  # pylint: disable=g-import-not-at-top
  from w2v_numpy import corpus as corpus_lib, sgns, trainer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sentences = [[f'w{i}' for i in rng.zipf(1.3, 40) % 300] for _ in range(200)]
  corpus = corpus_lib.corpus_from_sentences(sentences, min_count=1)
  before = (trainer._BatchTrainer.step, trainer._BatchTrainer._scatter_add, sgns.banded_loss_and_grads)
  seconds, updates, spent = w2v_profile.profile_once(corpus, epochs=1)
  assert (trainer._BatchTrainer.step, trainer._BatchTrainer._scatter_add, sgns.banded_loss_and_grads) == before
  assert updates > 0
  assert set(spent) == set(w2v_profile.PARTS) and all(spent[p] > 0 for p in w2v_profile.PARTS)
  assert sum(spent.values()) <= seconds
