"""Benchmark: w2v_numpy vs gensim Word2Vec (skip-gram, negative sampling), speed and quality.

Same corpus, same hyperparameters, same evaluation code (w2v_numpy.evaluate, which the tests
check against gensim's own evaluate_word_analogies / evaluate_word_pairs) for both. A last row
feeds gensim the corpus as 100-word pieces in random order: our updates mix 64 far-apart
passages (lanes), which raises similarity scores on this small corpus as shuffling does for
gensim, so that row is the like-for-like quality reference. Each
configuration runs --repeats times with seeds 0..R-1, the rows interleaved; the speed ratio is
the median over seeds of (ours / gensim 1 worker) from back-to-back runs (robust when the
machine is shared), quality the mean over runs. words/s = raw corpus words x epochs / training seconds
(vocabulary building excluded for both; gensim gets its sentences pre-tokenized in memory).
The CPU model and vector ISA (and the one NumPy dispatches to) are printed with the table.

Then, as a user times it: the whole `python -m w2v_numpy train` command (imports, reading,
training, writing vectors.txt/.bin and loss.png) against gensim's `Word2Vec(LineSentence(...))`
call (vocabulary and training, its import timed apart), each in a fresh process, interleaved;
and scaling: words/s and peak memory (VmHWM) on the corpus repeated 1x, 10x and to
--scale-words (20M) words, min_count scaled so the vocabulary stays the same, each run
training at least 4.5M words (epochs).

  python bench/w2v_vs_gensim.py [--corpus FILE] [--epochs 5] [--workers 2] [--repeats 3]
                                [--emulate-avx2]   # an AVX-512 CPU running AVX2 code only
"""
import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import w2v_numpy  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_DATA = REPO.parent / 'shared' / 'data'


def machine_line() -> str:
  """CPU model, cores, the widest vector ISA the CPU has, the one NumPy dispatches to and the
  OpenBLAS kernels (NumPy's matmul, gensim's sdot/saxpy through SciPy): the ratios move with them."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      key, _, value = line.partition(':')
      if key.strip() == 'model name' and model in ('', platform.machine(), platform.processor()):
        model = value.strip()
      elif key.strip() == 'flags' and not flags:
        flags = set(value.split())
  except OSError:
    pass
  isa = 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2' if flags else 'unknown ISA'
  try:   # __cpu_features__ reports a feature held back by NPY_DISABLE_CPU_FEATURES as False
    from numpy._core._multiarray_umath import __cpu_features__ as has  # pylint: disable=g-import-not-at-top
    numpy_isa = ('AVX-512' if has.get('X86_V4', has.get('AVX512_SKX')) else
                 'AVX2' if has.get('X86_V3', has.get('AVX2')) else 'SSE')
  except ImportError:
    numpy_isa = '?'
  try:
    import importlib  # pylint: disable=g-import-not-at-top
    import threadpoolctl  # pylint: disable=g-import-not-at-top
    importlib.import_module('scipy.linalg')  # loads SciPy's OpenBLAS, the one gensim calls
    kernels = sorted({str(lib.get('architecture')) for lib in threadpoolctl.threadpool_info()
                      if lib.get('internal_api') == 'openblas'})
    blas = f', OpenBLAS kernels {"/".join(kernels)}' if kernels else ''
  except ImportError:
    blas = ''
  held = ' [held to AVX2 by --emulate-avx2]' if os.environ.get(EMULATED) else ''
  return (f'machine: {model}, {os.cpu_count()} cores, {isa} (NumPy {np.__version__} dispatches '
          f'{numpy_isa}{blas}){held}')


# NumPy's dispatch held below AVX-512 and OpenBLAS (NumPy's and SciPy's) on its Haswell (AVX2)
# kernels: what an AVX2-only CPU runs, for both w2v_numpy and gensim. The microarchitecture stays.
AVX2_ENV = {'NPY_DISABLE_CPU_FEATURES': 'X86_V4 AVX512_ICL AVX512_SPR',
            'OPENBLAS_CORETYPE': 'Haswell'}
EMULATED = 'W2V_BENCH_EMULATED_AVX2'


def reexec_held_to_avx2(script: str, argv: list) -> None:
  """Runs `script` again in a process whose NumPy and OpenBLAS use AVX2 code only."""
  env = dict(os.environ, **AVX2_ENV, **{EMULATED: '1'})
  os.execve(sys.executable, [sys.executable, script, *argv], env)


PAIR_FILES = ('wordsim353.tsv', 'simlex999.txt', 'EN-MEN-TR-3k.txt')


def _quality(emb: w2v_numpy.Embeddings, wordsim: pathlib.Path, rare_pairs: list) -> dict:
  return {
      'analogy': w2v_numpy.analogy_accuracy(emb, wordsim / 'questions-words.txt',
                                            restrict_vocab=30000)['accuracy'],
      'WS353': w2v_numpy.word_pairs_spearman(emb, wordsim / 'wordsim353.tsv')['spearman'],
      'SimLex': w2v_numpy.word_pairs_spearman(emb, wordsim / 'simlex999.txt')['spearman'],
      'MEN': w2v_numpy.word_pairs_spearman(emb, wordsim / 'EN-MEN-TR-3k.txt')['spearman'],
      'rare': w2v_numpy.pairs_spearman(emb, rare_pairs)['spearman'],
  }


def _run_ours(corpus, args, workers: int, seed: int):
  config = w2v_numpy.TrainConfig(
      dim=args.dim, window=args.window, negative=args.negative, sample=args.sample,
      epochs=args.epochs, alpha=args.alpha, min_alpha=args.min_alpha, batch=args.batch,
      seed=seed, workers=workers)
  result = w2v_numpy.train(corpus, config, log=None)
  return result.words_per_second, w2v_numpy.Embeddings(result.words, result.vectors)


def _run_gensim(sentences, raw_words: int, args, workers: int, seed: int):
  from gensim.models import Word2Vec  # pylint: disable=g-import-not-at-top
  model = Word2Vec(vector_size=args.dim, window=args.window, negative=args.negative, hs=0,
                   sg=1, min_count=args.min_count, sample=args.sample, epochs=args.epochs,
                   alpha=args.alpha, min_alpha=args.min_alpha, workers=workers, seed=seed)
  model.build_vocab(sentences)
  start = time.perf_counter()
  model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
  seconds = time.perf_counter() - start
  emb = w2v_numpy.Embeddings(list(model.wv.index_to_key), model.wv.vectors)
  return raw_words * args.epochs / seconds, emb


_GENSIM_CALL = """
import sys, time
start = time.perf_counter()
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
imported = time.perf_counter()
Word2Vec(LineSentence(sys.argv[1]), vector_size={dim}, window={window}, negative={negative}, hs=0,
         sg=1, min_count={min_count}, sample={sample}, epochs={epochs}, alpha={alpha},
         min_alpha={min_alpha}, workers=1, seed=0)
print(imported - start, time.perf_counter() - imported)
"""


def _time_commands(args) -> None:
  """The whole train command against gensim's Word2Vec call, fresh processes, interleaved."""
  ours, call, imports, last_line = [], [], [], ''
  gensim_code = _GENSIM_CALL.format(**vars(args))
  with tempfile.TemporaryDirectory() as out:
    for _ in range(args.repeats):
      start = time.perf_counter()
      done = subprocess.run(
          [sys.executable, '-m', 'w2v_numpy', 'train', '--corpus', args.corpus, '--out', out,
           '--dim', str(args.dim), '--window', str(args.window), '--negative', str(args.negative),
           '--min-count', str(args.min_count), '--sample', str(args.sample), '--epochs',
           str(args.epochs), '--alpha', str(args.alpha), '--min-alpha', str(args.min_alpha)],
          cwd=REPO, check=True, capture_output=True, text=True)
      ours.append(time.perf_counter() - start)
      last_line = done.stdout.strip().splitlines()[-1]
      done = subprocess.run([sys.executable, '-c', gensim_code, args.corpus], check=True,
                            capture_output=True, text=True)
      imported, seconds = map(float, done.stdout.split())
      imports.append(imported)
      call.append(seconds)
  ratio = float(np.median(np.array(call) / np.array(ours)))
  print(f'\nwhole command, as a user times it (median of {args.repeats}): `python -m w2v_numpy '
        f'train` {np.median(ours):.2f}s; gensim `Word2Vec(LineSentence(...))` call '
        f'{np.median(call):.2f}s (+ {np.median(imports):.2f}s importing gensim); gensim call / '
        f'our command: {ratio:.2f}x')
  print(f'  our command reports: {last_line}')


_SCALE_RUN = """
import sys, time
sys.path.insert(0, sys.argv[2])
import w2v_numpy
start = time.perf_counter()
corpus = w2v_numpy.read_corpus(sys.argv[1], min_count=int(sys.argv[3]))
read = time.perf_counter() - start
result = w2v_numpy.train(corpus, w2v_numpy.TrainConfig(epochs=int(sys.argv[4]), seed=0), log=None)
peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(corpus.raw_token_count, corpus.vocab_size, read, result.words_per_second, int(peak) * 1024)
"""

_SCALE_GENSIM = """
import sys, time
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
model = Word2Vec(vector_size=100, window=5, negative=5, hs=0, sg=1, min_count=int(sys.argv[2]),
                 sample=1e-3, workers=1, seed=0)
model.build_vocab(LineSentence(sys.argv[1]))
start = time.perf_counter()
model.train(LineSentence(sys.argv[1]), total_examples=model.corpus_count, epochs=int(sys.argv[3]))
seconds = time.perf_counter() - start
peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(model.corpus_total_words * int(sys.argv[3]) / seconds, int(peak) * 1024)
"""


def _scaling(args) -> None:
  """The corpus repeated to larger sizes, min_count scaled with it so that the vocabulary stays
  the same, each trained on at least 4.5M words (epochs): words/s and peak memory, ours and
  gensim's (which streams the file)."""
  text = pathlib.Path(args.corpus).read_bytes()
  if not text.endswith(b'\n'):
    text += b'\n'
  words = len(text.split())
  targets = [1, 10, max(1, round(args.scale_words / words))]
  print('\nscaling, 1 worker, >= 4.5M words trained, the corpus repeated k times with min_count x k (same '
        'vocabulary and subsampling rates):\n\n| corpus words | vocabulary | w2v_numpy read s | '
        'w2v_numpy words/s | w2v_numpy peak memory (VmHWM) | gensim words/s | gensim peak memory |'
        '\n|---|---|---|---|---|---|---|')
  with tempfile.TemporaryDirectory() as tmp:
    for times in sorted(set(targets)):
      path = pathlib.Path(tmp) / f'x{times}.txt'
      with open(path, 'wb') as f:
        for _ in range(times):
          f.write(text)
      min_count = str(args.min_count * times)
      epochs = str(max(1, -(-4_500_000 // (words * times))))
      out = subprocess.run([sys.executable, '-c', _SCALE_RUN, str(path), str(REPO), min_count,
                            epochs], check=True, capture_output=True, text=True)
      n, vocab, read, wps, rss = out.stdout.split()
      out = subprocess.run([sys.executable, '-c', _SCALE_GENSIM, str(path), min_count, epochs],
                           check=True, capture_output=True, text=True)
      g_wps, g_rss = out.stdout.split()
      trained = f'{epochs} epoch' + ('' if epochs == '1' else 's')
      print(f'| {int(n):,} ({trained}) | {int(vocab):,} | {float(read):.1f} | {float(wps) / 1e3:.0f}K | '
            f'{int(rss) / 2**20:.0f} MiB | {float(g_wps) / 1e3:.0f}K | '
            f'{int(g_rss) / 2**20:.0f} MiB |', flush=True)
      path.unlink()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--corpus', default=str(DEFAULT_DATA / 'text' / 'enwiki_sample.txt'))
  p.add_argument('--wordsim-dir', default=str(DEFAULT_DATA / 'wordsim'))
  p.add_argument('--dim', type=int, default=100)
  p.add_argument('--window', type=int, default=5)
  p.add_argument('--negative', type=int, default=5)
  p.add_argument('--min-count', type=int, default=5)
  p.add_argument('--sample', type=float, default=1e-3)
  p.add_argument('--epochs', type=int, default=5)
  p.add_argument('--alpha', type=float, default=0.025)
  p.add_argument('--min-alpha', type=float, default=0.0001)
  p.add_argument('--batch', type=int, default=w2v_numpy.TrainConfig.batch)
  p.add_argument('--workers', type=int, default=2, help='Hogwild processes for the 2nd row')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--rare-below', type=int, default=50,
                 help="the 'rare' column: WordSim/SimLex/MEN pairs whose two words both occur "
                      'fewer than this many times in the corpus (and at least min_count)')
  p.add_argument('--scale-words', type=int, default=20_000_000,
                 help='largest corpus of the scaling table (0: no scaling table)')
  p.add_argument('--no-command', action='store_true', help='skip the whole-command timing')
  p.add_argument('--emulate-avx2', action='store_true',
                 help='on an AVX-512 CPU: run everything (ours, gensim, the subprocesses) with '
                      'NumPy dispatch and OpenBLAS kernels held to AVX2, as an AVX2-only CPU runs them')
  argv = sys.argv[1:] if argv is None else list(argv)
  args = p.parse_args(argv)
  if args.emulate_avx2 and not os.environ.get(EMULATED):
    reexec_held_to_avx2(__file__, argv)
  wordsim = pathlib.Path(args.wordsim_dir)

  from gensim.models.word2vec import LineSentence  # pylint: disable=g-import-not-at-top
  corpus = w2v_numpy.read_corpus(args.corpus, min_count=args.min_count)
  sentences = list(LineSentence(args.corpus))   # same tokenization, 10000-word cap
  counts = dict(zip(corpus.words, corpus.counts.tolist()))
  rare_pairs = w2v_numpy.rare_word_pairs([wordsim / f for f in PAIR_FILES], counts,
                                         args.rare_below)
  print(machine_line(), flush=True)
  print(f'corpus {args.corpus}: {corpus.raw_token_count:,} words, vocabulary '
        f'{corpus.vocab_size:,}; dim {args.dim}, window {args.window}, negative '
        f'{args.negative}, sample {args.sample}, min_count {args.min_count}, epochs '
        f'{args.epochs}, batch {args.batch}; {args.repeats} runs each (seeds 0..'
        f'{args.repeats - 1}); rare: {len(rare_pairs)} pairs of words seen {args.min_count}-'
        f'{args.rare_below - 1} times', flush=True)

  rows = {'w2v_numpy, 1 worker': lambda s: _run_ours(corpus, args, 1, s)}
  if args.workers > 1:
    rows[f'w2v_numpy, {args.workers} workers (Hogwild)'] = (
        lambda s: _run_ours(corpus, args, args.workers, s))
  rows['gensim 4, 1 worker'] = lambda s: _run_gensim(sentences, corpus.raw_token_count, args, 1, s)
  rows['gensim 4, 2 workers'] = lambda s: _run_gensim(sentences, corpus.raw_token_count, args, 2, s)
  # Quality reference for our lanes: gensim trains in corpus order, we mix 64 far-apart passages
  # per update; fed its text as 100-word pieces in random order, gensim sees mixed text too.
  pieces = [sent[i:i + 100] for sent in sentences for i in range(0, len(sent), 100)]
  rows['gensim 4, 1 worker, shuffled 100-word pieces'] = lambda s: _run_gensim(
      [pieces[i] for i in np.random.default_rng(s).permutation(len(pieces))],
      corpus.raw_token_count, args, 1, s)
  speed = {name: [] for name in rows}
  quality = {name: [] for name in rows}
  for seed in range(args.repeats):        # interleaved, so load changes hit all rows alike
    for name, run in rows.items():
      wps, emb = run(seed)
      speed[name].append(wps)
      quality[name].append(_quality(emb, wordsim, rare_pairs))
      print(f'  {name} seed {seed}: {wps / 1e3:.0f}K words/s', file=sys.stderr, flush=True)

  keys = ['analogy', 'WS353', 'SimLex', 'MEN', 'rare']
  base = speed['gensim 4, 1 worker']
  mean_q = {n: {k: float(np.mean([q[k] for q in quality[n]])) for k in keys} for n in rows}
  print('\n| run | words/s best | words/s median | × gensim 1 worker (median of paired runs) | '
        + ' | '.join(keys) + ' |')
  print('|---|---|---|---|' + '---|' * len(keys))
  for name in rows:
    paired = float(np.median(np.array(speed[name]) / np.array(base)))
    print(f'| {name} | {max(speed[name]) / 1e3:.0f}K | {np.median(speed[name]) / 1e3:.0f}K | '
          f'{paired:.2f} | ' + ' | '.join(f'{mean_q[name][k]:.4f}' for k in keys) + ' |')
  print(f'\n{machine_line()}')
  print('\nper-seed spread (std over seeds): ' + '; '.join(
      f"{name}: " + ', '.join(f"{k} {np.std([q[k] for q in quality[name]]):.4f}" for k in keys)
      for name in rows))
  for ref_name in ('gensim 4, 1 worker', 'gensim 4, 1 worker, shuffled 100-word pieces'):
    ref = mean_q[ref_name]
    for name in rows:
      if name.startswith('w2v_numpy'):
        diffs = ', '.join(f'{k} {mean_q[name][k] - ref[k]:+.4f}' for k in keys)
        worst = max(abs(mean_q[name][k] - ref[k]) for k in keys)
        print(f'\n{name} minus {ref_name}: {diffs} (largest |diff| {worst:.4f})')

  if not args.no_command:
    _time_commands(args)
  if args.scale_words:
    _scaling(args)
  print(f'\n{machine_line()}')


if __name__ == '__main__':
  main()
