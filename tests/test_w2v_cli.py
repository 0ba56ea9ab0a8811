"""`python -m w2v_numpy` commands, including bad input handling."""
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from w2v_numpy import cli
from w2v_numpy import download
from w2v_numpy import formats

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def trained(tmp_path_factory, shared_data):
  """Trains on a 40K-word slice of enwiki_sample through the CLI."""
  tmp = tmp_path_factory.mktemp('cli')
  words = (shared_data / 'text' / 'enwiki_sample.txt').read_text('utf-8')[:300_000].split()
  corpus = tmp / 'slice.txt'
  corpus.write_text('\n'.join(' '.join(words[i:i + 500]) for i in range(0, 40_000, 500)))
  out = tmp / 'run'
  code = cli.main(['train', '--corpus', str(corpus), '--out', str(out), '--dim', '20',
                   '--epochs', '2', '--min-count', '3', '--npz', '--quiet'])
  assert code == 0
  return out


def test_train_writes_vectors_and_loss_plot(trained):
  for name in ('vectors.txt', 'vectors.bin', 'vectors.npz', 'loss.png', 'loss.tsv'):
    assert (trained / name).stat().st_size > 0, name
  assert (trained / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  text, binary = formats.load(trained / 'vectors.txt'), formats.load(trained / 'vectors.bin')
  assert text.words == binary.words and text.words[0] == 'the'
  np.testing.assert_array_equal(text.vectors, binary.vectors)
  keyedvectors = pytest.importorskip('gensim.models').KeyedVectors
  kv = keyedvectors.load_word2vec_format(str(trained / 'vectors.bin'), binary=True)
  np.testing.assert_array_equal(kv.vectors, binary.vectors)


def test_eval_and_plot_commands(trained, shared_data, capsys, tmp_path):
  wordsim = shared_data / 'wordsim'
  code = cli.main(['eval', '--vectors', str(trained / 'vectors.txt'),
                   '--analogies', str(wordsim / 'questions-words.txt'),
                   '--pairs', str(wordsim / 'wordsim353.tsv'), str(wordsim / 'EN-MEN-TR-3k.txt'),
                   '--neighbors', 'the', 'qqqzzz'])
  out = capsys.readouterr().out
  assert code == 0
  assert 'analogy accuracy' in out and out.count('spearman') == 2
  assert 'the: ' in out and 'qqqzzz: not in vocabulary' in out
  png = tmp_path / 'map.png'
  assert cli.main(['plot', '--vectors', str(trained / 'vectors.bin'), '--words', 'the', 'of',
                   'and', 'in', '--out', str(png)]) == 0
  assert png.read_bytes()[:4] == b'\x89PNG'
  assert cli.main(['plot', '--loss', str(trained / 'loss.tsv'), '--out', str(tmp_path / 'l.png')]) == 0


def _bad_corpus_cases(tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_text('   \n')
  rare = tmp_path / 'rare.txt'
  rare.write_text('a b c\n')
  binary = tmp_path / 'latin1.txt'
  binary.write_bytes('one two\ncaf\xe9 ok\n'.encode('latin-1'))
  return [(tmp_path / 'missing.txt', [], 'no such file'), (empty, [], 'empty'),
          (rare, [], 'min_count=5'), (binary, [], r'latin1\.txt:2: .*UTF-8')]


def test_bad_corpus_inputs_fail_with_a_message(tmp_path, capsys):
  for path, extra, message in _bad_corpus_cases(tmp_path):
    code = cli.main(['train', '--corpus', str(path), '--out', str(tmp_path / 'o'), *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(message, err), (message, err)


def test_unusable_out_fails_before_reading_the_corpus(tmp_path, capsys, monkeypatch):
  """--out that is a file, or cannot be created, is refused before any work (vectors are never lost)."""
  monkeypatch.setattr(cli.corpus_lib, 'read_corpus', lambda *a, **k: pytest.fail('read the corpus'))
  a_file = tmp_path / 'taken'
  a_file.write_text('x')
  for out, message in ((a_file, 'is a file'), (a_file / 'sub', 'is not writable')):
    assert cli.main(['train', '--corpus', 'x', '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert f'--out {out} {message}' in err and len(err.strip().splitlines()) == 1


def test_matrices_that_cannot_fit_are_refused_with_the_figures(tmp_path, capsys):
  corpus = tmp_path / 'c.txt'
  corpus.write_text(' '.join(f'w{i % 50}' for i in range(5000)))
  code = cli.main(['train', '--corpus', str(corpus), '--out', str(tmp_path / 'o'), '--dim', '100000000'])
  err = capsys.readouterr().err
  assert code == 1 and re.search(r'dim 100000000 with a vocabulary of 50 words needs about [\d.]+ GiB .* '
                                 r'GiB are available', err), err
  assert not (tmp_path / 'o' / 'vectors.txt').exists()


@pytest.mark.parametrize('flag', ['--window', '--negative', '--dim'])
@pytest.mark.parametrize('value', ['0', '-3'])
def test_non_positive_sizes_are_rejected(tmp_path, capsys, flag, value):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['train', '--corpus', 'x', '--out', str(tmp_path), flag, value])
  assert exit_info.value.code != 0
  assert flag in capsys.readouterr().err


def test_module_entry_point_exits_non_zero_with_stderr(tmp_path):
  run = subprocess.run([sys.executable, '-m', 'w2v_numpy', 'train', '--corpus',
                        str(tmp_path / 'missing.txt'), '--out', str(tmp_path / 'o')],
                       capture_output=True, text=True, cwd=REPO)
  assert run.returncode != 0 and 'no such file' in run.stderr and run.stdout == ''
  run = subprocess.run([sys.executable, '-m', 'w2v_numpy', 'eval', '--vectors',
                        str(tmp_path / 'nope.txt'), '--pairs', 'x'],
                       capture_output=True, text=True, cwd=REPO)
  assert run.returncode != 0 and 'no such file' in run.stderr


def test_download_text8_from_a_local_url(tmp_path, monkeypatch):
  archive = tmp_path / 'text8.zip'
  with zipfile.ZipFile(archive, 'w') as zf:
    zf.writestr('text8', ' anarchism originated as a term of abuse')
  out = tmp_path / 'data'
  path = download.download_text8(out, url=archive.as_uri())
  assert pathlib.Path(path).read_text() == ' anarchism originated as a term of abuse'
  # Already there: no second fetch.
  monkeypatch.setattr(download, 'fetch', lambda *a: pytest.fail('fetched again'))
  assert download.download_text8(out, url=archive.as_uri()) == path
  monkeypatch.undo()
  # The CLI path, with a bad archive.
  bad = tmp_path / 'bad.zip'
  bad.write_bytes(b'not a zip')
  assert cli.main(['download', 'text8', '--dir', str(tmp_path / 'd2'), '--url', bad.as_uri()]) == 1
  assert cli.main(['download', 'text8', '--dir', str(tmp_path / 'd3'),
                   '--url', archive.as_uri()]) == 0
  assert (tmp_path / 'd3' / 'text8').is_file()


@pytest.mark.parametrize('background', [True, False])
def test_loss_plotter_writes_the_png_or_names_the_failure(tmp_path, background):
  from w2v_numpy import plots  # pylint: disable=g-import-not-at-top
  history = [(0.5, 3.0), (1.0, 2.5)]
  plots.LossPlotter(background).plot(history, tmp_path / 'loss.png')
  assert (tmp_path / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='no_such_dir'):
    plots.LossPlotter(background).plot(history, tmp_path / 'no_such_dir' / 'loss.png')
  plots.LossPlotter(background).close()   # a plotter never used stops at once
