"""Command line: `python -m w2v_numpy {train,eval,plot,neighbors,download} ...`."""
import argparse
import os
import sys
import tempfile
import time
from typing import Sequence

from w2v_numpy import corpus as corpus_lib
from w2v_numpy import evaluate
from w2v_numpy import formats
from w2v_numpy import trainer


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
  return value


def _non_negative_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
  if not value >= 0:
    raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
  return value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m w2v_numpy',
                              description='Pure-NumPy word2vec (skip-gram, negative sampling).')
  sub = p.add_subparsers(dest='command', required=True)

  t = sub.add_parser('train', help='train vectors; writes vectors.txt, vectors.bin, loss.png')
  t.add_argument('--corpus', required=True, help='UTF-8 text, one sentence per line')
  t.add_argument('--out', required=True, help='output folder')
  t.add_argument('--dim', type=_positive_int, default=100)
  t.add_argument('--window', type=_positive_int, default=5)
  t.add_argument('--negative', type=_positive_int, default=5)
  t.add_argument('--min-count', type=_positive_int, default=5)
  t.add_argument('--max-vocab', type=_positive_int, default=None,
                 help='keep at most this many most frequent words')
  t.add_argument('--sample', type=_non_negative_float, default=1e-3)
  t.add_argument('--epochs', type=_positive_int, default=5)
  t.add_argument('--alpha', type=_non_negative_float, default=0.025)
  t.add_argument('--min-alpha', type=_non_negative_float, default=0.0001)
  t.add_argument('--batch', type=_positive_int, default=trainer.TrainConfig.batch,
                 help='center words per vectorized update (larger: faster, lower quality)')
  t.add_argument('--workers', type=_positive_int, default=1,
                 help='Hogwild processes sharing the matrices (not reproducible if > 1)')
  t.add_argument('--seed', type=int, default=0)
  t.add_argument('--max-sentence-length', type=_positive_int, default=10000)
  t.add_argument('--npz', action='store_true', help='also write vectors.npz')
  t.add_argument('--quiet', action='store_true', help='no progress lines')

  e = sub.add_parser('eval', help='analogy accuracy, word-pair Spearman, nearest neighbours')
  e.add_argument('--vectors', required=True, help='.txt (word2vec text), .bin or .npz')
  e.add_argument('--analogies', help='questions-words.txt')
  e.add_argument('--pairs', nargs='+', default=[], help='`w1 w2 score` files')
  e.add_argument('--neighbors', nargs='+', default=[], help='words to show neighbours of')
  e.add_argument('--topn', type=_positive_int, default=10)
  e.add_argument('--restrict-vocab', type=_positive_int, default=30000)

  g = sub.add_parser('plot', help='2-D PCA map of words and/or a loss curve, as PNG')
  g.add_argument('--vectors', help='.txt, .bin or .npz (with --words)')
  g.add_argument('--words', nargs='+', default=[])
  g.add_argument('--loss', help='loss.tsv written by train')
  g.add_argument('--out', required=True, help='PNG path')

  d = sub.add_parser('download', help='download a corpus')
  d.add_argument('name', choices=['text8'])
  d.add_argument('--dir', default='.', help='folder to put the unzipped file in')
  d.add_argument('--url', default=None, help='mirror URL of text8.zip')
  return p


def _check_out_dir(out: str) -> None:
  """Creates --out and checks that files can be written in it; raises OSError naming it."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise OSError(f'--out {out} is a file; give a folder (it will hold vectors.txt, vectors.bin, loss.png)')
  try:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
      pass
  except OSError as e:
    raise OSError(f'--out {out} is not writable ({e.strerror or e}); give another folder') from None


def _train(args) -> int:
  if args.min_alpha > args.alpha:
    raise ValueError(f'--min-alpha ({args.min_alpha}) must not exceed --alpha ({args.alpha})')
  if not args.alpha > 0:
    raise ValueError('--alpha must be > 0')
  _check_out_dir(args.out)  # Before training: vectors must not be lost to an unwritable --out.
  from w2v_numpy import plots  # pylint: disable=g-import-not-at-top
  # matplotlib is imported on a spare core while the corpus is read and training runs (not when
  # the Hogwild workers take every core).
  plotter = plots.LossPlotter(background=args.workers < (os.cpu_count() or 1))
  try:
    log = None if args.quiet else sys.stdout
    start = time.perf_counter()
    corpus = corpus_lib.read_corpus(args.corpus, min_count=args.min_count,
                                    max_vocab=args.max_vocab,
                                    max_sentence_length=args.max_sentence_length)
    if log:
      print(f'{args.corpus}: {corpus.raw_token_count:,} words, vocabulary {corpus.vocab_size:,} '
            f'(min_count {args.min_count}), {len(corpus.tokens):,} in-vocabulary tokens, '
            f'read in {time.perf_counter() - start:.1f}s', file=log, flush=True)
    config = trainer.TrainConfig(
        dim=args.dim, window=args.window, negative=args.negative, sample=args.sample,
        epochs=args.epochs, alpha=args.alpha, min_alpha=args.min_alpha, batch=args.batch,
        seed=args.seed, workers=args.workers)
    result = trainer.train(corpus, config, log=log)
  except BaseException:
    plotter.close()
    raise
  read_seconds = time.perf_counter() - start - result.seconds
  start = time.perf_counter()
  os.makedirs(args.out, exist_ok=True)
  emb = evaluate.Embeddings(result.words, result.vectors)
  formats.save_text(emb, os.path.join(args.out, 'vectors.txt'))
  formats.save_binary(emb, os.path.join(args.out, 'vectors.bin'))
  if args.npz:
    formats.save_npz(emb, os.path.join(args.out, 'vectors.npz'))
  with open(os.path.join(args.out, 'loss.tsv'), 'w', encoding='utf-8') as f:
    f.write('epoch\tloss\n')
    f.writelines(f'{e:.4f}\t{l:.6f}\n' for e, l in result.loss_history)
  write_seconds = time.perf_counter() - start
  start = time.perf_counter()
  if result.loss_history:
    plotter.plot(result.loss_history, os.path.join(args.out, 'loss.png'))
  else:
    plotter.close()
  if log:
    print(f'trained {config.epochs} epochs in {result.seconds:.1f}s '
          f'({result.words_per_second / 1e3:.1f}K words/s); reading {read_seconds:.1f}s, writing '
          f'vectors {write_seconds:.1f}s, loss.png {time.perf_counter() - start:.1f}s more; wrote '
          f'{args.out}/vectors.txt, vectors.bin, loss.png', file=log)
  return 0


def _eval(args) -> int:
  if not (args.analogies or args.pairs or args.neighbors):
    raise ValueError('eval needs --analogies, --pairs or --neighbors')
  emb = formats.load(args.vectors)
  print(f'{args.vectors}: {len(emb.words):,} words, dim {emb.vectors.shape[1]}')
  if args.analogies:
    r = evaluate.analogy_accuracy(emb, args.analogies, restrict_vocab=args.restrict_vocab)
    print(f'analogy accuracy {r["accuracy"]:.4f} ({r["correct"]}/{r["total"]}, '
          f'{r["skipped"]} questions skipped) [{args.analogies}]')
  for path in args.pairs:
    r = evaluate.word_pairs_spearman(emb, path)
    print(f'spearman {r["spearman"]:.4f} ({r["pairs"]} pairs, {r["skipped"]} skipped) [{path}]')
  for word in args.neighbors:
    if word not in emb:
      print(f'{word}: not in vocabulary')
      continue
    near = emb.most_similar(word, topn=args.topn)
    print(f'{word}: ' + ', '.join(f'{w} {s:.3f}' for w, s in near))
  return 0


def _plot(args) -> int:
  from w2v_numpy import plots  # pylint: disable=g-import-not-at-top
  if args.loss:
    history = []
    with open(args.loss, encoding='utf-8') as f:
      for line_no, line in enumerate(f, start=1):
        if line_no == 1 and line.startswith('epoch'):
          continue
        try:
          e, l = line.split()
          history.append((float(e), float(l)))
        except ValueError:
          raise ValueError(f'{args.loss}:{line_no}: expected `epoch<TAB>loss`') from None
    plots.plot_loss(history, args.out)
  elif args.vectors and args.words:
    missing = plots.plot_words(formats.load(args.vectors), args.words, args.out)
    if missing:
      print(f'not in vocabulary, left out: {" ".join(missing)}', file=sys.stderr)
  else:
    raise ValueError('plot needs --loss FILE, or --vectors FILE with --words')
  print(f'wrote {args.out}')
  return 0


def _download(args) -> int:
  from w2v_numpy import download  # pylint: disable=g-import-not-at-top
  path = download.download_text8(args.dir, url=args.url or download.TEXT8_URL)
  print(f'text8 is at {path}')
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (argparse exits with 2 on bad options)."""
  args = _parser().parse_args(argv)
  handler = {'train': _train, 'eval': _eval, 'plot': _plot, 'download': _download}
  try:
    return handler[args.command](args)
  except (ValueError, OSError, MemoryError) as e:  # includes CorpusError, EvalFileError, VectorFileError
    print(f'error: {e}', file=sys.stderr)
    return 1
