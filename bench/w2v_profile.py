"""Where a w2v_numpy update spends its time: the parts of `_BatchTrainer.step`, timed in place.

Wraps (never copies) the step, `sgns.banded_loss_and_grads`, the two scatter-adds and the alias
draws with `time.perf_counter`, trains `--epochs` epochs on the corpus with 1 worker (the
benchmark's settings) and prints µs per update and shares, best of `--repeats` runs. The rest of
the step is the band pair mask, the output ids and the two gathers.

  python bench/w2v_profile.py [--corpus FILE] [--epochs 1] [--repeats 3] [--emulate-avx2]
"""
import argparse
import collections
import os
import sys
import time

import w2v_vs_gensim as bench   # this directory: the machine line and the AVX2 environment

import w2v_numpy  # pylint: disable=g-import-not-at-top,wrong-import-order
from w2v_numpy import sampling, sgns, trainer  # pylint: disable=g-import-not-at-top,wrong-import-order

PARTS = ('banded_loss_and_grads (products, sigmoid, loss)', 'scatter-add of input rows',
         'scatter-add of output rows', 'negatives (alias draws)',
         'rest of step (pair mask, output ids, gathers)')


def _timed(spent: collections.Counter, key, fn):
  """fn, adding its seconds to spent[key] (key may be a function of the call count)."""
  calls = [0]

  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      spent[key(calls[0]) if callable(key) else key] += time.perf_counter() - start
      calls[0] += 1
  return wrapper


def profile_once(corpus: w2v_numpy.Corpus, epochs: int) -> tuple[float, int, collections.Counter]:
  """(training seconds, updates, seconds per part) of one 1-worker run with the parts wrapped."""
  spent = collections.Counter()
  saved = (trainer._BatchTrainer.step, trainer._BatchTrainer._scatter_add,
           sgns.banded_loss_and_grads, sampling.AliasSampler.draw)
  step, scatter, banded, draw = saved
  updates = [0]

  def counted_step(self, *args, **kwargs):
    updates[0] += 1
    return step(self, *args, **kwargs)

  try:   # a step calls the scatter-add twice: input rows, then output rows
    trainer._BatchTrainer.step = _timed(spent, 'step', counted_step)
    trainer._BatchTrainer._scatter_add = _timed(spent, lambda i: PARTS[1 + i % 2], scatter)
    sgns.banded_loss_and_grads = _timed(spent, PARTS[0], banded)
    sampling.AliasSampler.draw = _timed(spent, PARTS[3], draw)
    result = w2v_numpy.train(corpus, w2v_numpy.TrainConfig(epochs=epochs), log=None)
  finally:
    (trainer._BatchTrainer.step, trainer._BatchTrainer._scatter_add,
     sgns.banded_loss_and_grads, sampling.AliasSampler.draw) = saved
  spent[PARTS[4]] = spent.pop('step') - sum(spent[p] for p in PARTS[:4])
  return result.seconds, updates[0], spent


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--corpus', default=str(bench.DEFAULT_DATA / 'text' / 'enwiki_sample.txt'))
  p.add_argument('--epochs', type=int, default=1)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--emulate-avx2', action='store_true', help="as bench/w2v_vs_gensim.py's flag")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = p.parse_args(argv)
  if args.emulate_avx2 and not os.environ.get(bench.EMULATED):
    bench.reexec_held_to_avx2(__file__, argv)
  corpus = w2v_numpy.read_corpus(args.corpus, min_count=5)
  print(bench.machine_line(), flush=True)
  runs = [profile_once(corpus, args.epochs) for _ in range(args.repeats)]
  seconds, updates, spent = min(runs, key=lambda run: run[0])
  steps = sum(spent.values())
  print(f'\n{args.corpus}: {args.epochs} epoch(s), {updates:,} updates of {w2v_numpy.TrainConfig.batch} '
        f'centers, best of {args.repeats}: {seconds:.2f} s, '
        f'{corpus.raw_token_count * args.epochs / seconds / 1e3:.0f}K words/s\n')
  print('| part of one update | µs | share |\n|---|---|---|')
  for part in PARTS:
    print(f'| {part} | {spent[part] / updates * 1e6:.0f} | {spent[part] / seconds:.0%} |')
  print(f'| outside the steps (subsampling, lanes, the loop) | {(seconds - steps) / updates * 1e6:.0f} | '
        f'{(seconds - steps) / seconds:.0%} |')
  print(f'| **one update, all in** | **{seconds / updates * 1e6:.0f}** | |')


if __name__ == '__main__':
  main()
