"""The language-model task: documents, split and packing, the BPE, bits per byte by hand, bad inputs, and the
task through launch.py (train, eval on a file, generate, interactive with piped input, resume)."""
import json
import math
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import models
import train
from configs import lm as lm_configs
from data import bpe
from data import lm_batches
from data import lm_text
from data.errors import InputError
from tests.conftest import REPO_ROOT
from tests.conftest import launch
from tests.conftest import launch_env
from tests.conftest import ok
from train.errors import USER_ERRORS
from train.tasks import lm as lm_task
from train.tasks.lm import generation
from train.tasks.lm import objective

WORDS = ('the cat sat on a mat while the dog ran to the park and a bird sang in the tall green tree near the old '
         'stone wall').split()


def _corpus(path: pathlib.Path, docs: int = 300, seed: int = 0) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  path.write_text('\n'.join(' '.join(rng.choice(WORDS, int(rng.integers(8, 30)))) + '.' for _ in range(docs)) + '\n')
  return path


def _data_cfg(files: str, **overrides) -> ml_collections.ConfigDict:
  cfg = lm_configs.get_config('smoke').data
  cfg.files = files
  cfg.update(overrides)
  return cfg


def test_documents_from_lines_paragraphs_wikitext_and_jsonl(tmp_path):
  txt = tmp_path / 'a.txt'
  txt.write_text(' = Title A = \nfirst para.\n\nsecond para.\n = Title B = \nthird.\n')
  assert lm_text.read_documents(str(txt), 'lines') == ['= Title A =', 'first para.', 'second para.', '= Title B =',
                                                       'third.']
  assert lm_text.read_documents(str(txt), 'paragraphs') == ['= Title A =\nfirst para.', 'second para.\n= Title B =\n'
                                                           'third.']
  assert lm_text.read_documents(str(txt), 'wikitext') == ['= Title A =\nfirst para.\nsecond para.',
                                                         '= Title B =\nthird.']
  rows = tmp_path / 'b.jsonl'
  rows.write_text('{"text": "one story."}\n\n{"text": "two."}\n')
  assert lm_text.read_documents(str(rows), 'lines') == ['one story.', 'two.']


@pytest.mark.parametrize('content, says', [
    (b'{"text": "fine"}\n{"title": "no text"}\n', r'b.jsonl:2: a .jsonl line needs a string field "text"'),
    (b'{"text": "fine"}\nnot json\n', r'b.jsonl:2: not a JSON object'),
    (b'\n\n  \n', r'holds no text'),
    (b'good line\n\xff\xfe bad\n', r'b.jsonl:2: .* is not UTF-8 \(byte 0xff at column 1\)'),
])
def test_bad_input_files_are_one_line_naming_file_and_line(tmp_path, content, says):
  path = tmp_path / 'b.jsonl'
  path.write_bytes(content)
  with pytest.raises(InputError, match=says):
    lm_text.read_documents(str(path), 'lines')


def test_split_by_document_is_deterministic_and_hf_sources_load_from_local_copies(tmp_path):
  cfg = _data_cfg(str(_corpus(tmp_path / 'c.txt')), val_fraction=0.2)
  first, second = lm_text.load_documents(cfg), lm_text.load_documents(cfg)
  assert first == second and 0.1 < len(first['validation']) / 300 < 0.3
  assert not set(first['train']) & set(first['validation'])
  cfg.split_salt = 'other'
  assert lm_text.load_documents(cfg)['validation'] != first['validation']

  wikitext = {'train': [{'text': ' = Alpha = \n'}, {'text': ' Alpha is a letter .\n'}, {'text': ''},
                        {'text': ' = = Use = = \n'}, {'text': ' It is used .\n'}, {'text': ' = Beta = \n'},
                        {'text': ' Beta follows .\n'}],
              'validation': [{'text': ' = Gamma = \n'}, {'text': ' Gamma is third .\n'}]}
  stories = {'train': [{'text': 'Once upon a time.'}, {'text': '  '}], 'validation': [{'text': 'The end.'}]}
  fake = lambda name, config: {'Salesforce/wikitext': wikitext, 'roneneldan/TinyStories': stories}[name]  # pylint: disable=unnecessary-lambda-assignment
  docs = lm_text.load_documents(_data_cfg('', hf_name='wikitext-103'), fake)
  assert docs == {'train': ['= Alpha =\nAlpha is a letter .\n= = Use = =\nIt is used .', '= Beta =\nBeta follows .'],
                  'validation': ['= Gamma =\nGamma is third .']}
  assert lm_text.load_documents(_data_cfg('', hf_name='tinystories'), fake) == {
      'train': ['Once upon a time.'], 'validation': ['The end.']}


def test_packing_bytes_and_batches(tmp_path):
  workdir = tmp_path / 'w'
  cfg = _data_cfg(str(_corpus(tmp_path / 'c.txt')), seq_len=16, vocab_size=300)
  data = lm_batches.prepare(cfg, workdir)
  assert data.train_rows_NxW.shape[1] == 17 and data.val_rows_NxW.shape[1] == 17
  docs = lm_text.load_documents(cfg)
  stream = bpe.encode_documents(data.tokenizer, docs['train'], data.specials.end_of_text)
  np.testing.assert_array_equal(data.train_rows_NxW.reshape(-1), stream[:data.train_rows_NxW.size])
  assert (stream == data.specials.end_of_text).sum() == len(docs['train'])
  # Every token stands for its UTF-8 bytes: a document's tokens add up to its bytes (+1 for end of text).
  ids = data.tokenizer.encode(docs['train'][0], add_special_tokens=False).ids
  assert data.token_bytes_V[ids].sum() == len(docs['train'][0].encode('utf-8'))
  again = lm_batches.prepare(cfg, workdir)  # From the cache: the same rows.
  np.testing.assert_array_equal(again.val_rows_NxW, data.val_rows_NxW)
  a = lm_text.train_batch(data.train_rows_NxW, 0, 7, 8)
  np.testing.assert_array_equal(a['tokens'], lm_text.train_batch(data.train_rows_NxW, 0, 7, 8)['tokens'])
  assert not np.array_equal(a['tokens'], lm_text.train_batch(data.train_rows_NxW, 0, 8, 8)['tokens'])
  with pytest.raises(InputError, match='fewer than one batch'):
    lm_text.check_rows(data.val_rows_NxW, 10_000, 'the validation text')
  # A workdir's tokenizer is kept: another one asked for is refused by name.
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.vocab_size = 400
  with pytest.raises(USER_ERRORS, match=r'lm_tokenizer.json is a BPE trained on the training text \(data.vocab_size=300\)'):
    lm_batches.prepare(other, workdir)
  other.tokenizer = str(workdir / bpe.TOKENIZER_FILE)  # A tokenizer.json by path works in a fresh workdir.
  by_path = lm_batches.prepare(other, tmp_path / 'w2')
  assert by_path.tokenizer.to_str() == data.tokenizer.to_str()
  from tokenizers import Tokenizer, models as tok_models  # pylint: disable=g-import-not-at-top
  word_level = Tokenizer(tok_models.WordLevel({bpe.END_OF_TEXT: 0, 'the': 1, '[UNK]': 2}, unk_token='[UNK]'))
  word_level.add_special_tokens([bpe.END_OF_TEXT])
  word_level.save(str(tmp_path / 'words.json'))
  other.tokenizer = str(tmp_path / 'words.json')  # Bits per byte needs byte-level tokens: refused, by name.
  with pytest.raises(InputError, match=r'words.json is not a byte-level BPE'):
    lm_batches.prepare(other, tmp_path / 'w3')
  assert not (tmp_path / 'w3' / bpe.TOKENIZER_FILE).exists()


def test_bits_per_byte_of_a_uniform_model_by_hand(tmp_path):
  """Zero weights give uniform next-token probabilities: loss = ln V per token, bits per byte = tokens x log2 V
  over the bytes of the tokens predicted."""
  config = lm_configs.get_config('smoke')
  config.data.files = str(_corpus(tmp_path / 'c.txt'))
  config.data.vocab_size = 300
  context = lm_task.LMContext(tmp_path)
  data = context.data(config.data)
  model = models.build(config.model, vocab_size=data.vocab_size)
  params = model.init(jax.random.key(0), data.train_rows_NxW[:1, :-1])['params']
  zeros = jax.tree.map(lambda x: x * 0, params)
  evaluator = objective.LMEval(config, model, context, dict(loops_curve=False))
  figures = evaluator(zeros)
  rows = evaluator.rows
  tokens = rows[:, 1:].size
  bytes_ = data.token_bytes_V[rows[:, 1:]].sum()
  assert figures['tokens'] == tokens and figures['bytes'] == int(bytes_)
  assert figures['loss'] == pytest.approx(math.log(data.vocab_size), rel=1e-5)
  assert figures['perplexity'] == pytest.approx(data.vocab_size, rel=1e-4)
  assert figures['bits_per_byte'] == pytest.approx(tokens * math.log2(data.vocab_size) / bytes_, rel=1e-5)
  assert figures['unigram_bits_per_byte'] < figures['bits_per_byte']


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp('lm')
  ok(launch('--config=configs/lm.py:smoke', f'--workdir={workdir}', '--config.sweep.grid=model=llama,looped; '
            'flops_budget=6e9; seed=0'))
  return workdir


SMOKE_POINT = ['--config=configs/lm.py:smoke', '--config.sweep.grid=model=llama; flops_budget=6e9; seed=0']


def test_smoke_study_learns_and_reports(smoke_run):
  results = json.loads((smoke_run / 'results.json').read_text())
  assert set(results) == {'llama_flops_budget=6e9_s0', 'looped_flops_budget=6e9_s0'}
  for r in results.values():
    assert r['train_steps'] == round(6e9 / r['flops_per_step'])
    assert r['bits_per_byte'] < r['byte_bits_per_byte']  # It learned more than the byte frequencies.
  looped = results['looped_flops_budget=6e9_s0']
  assert set(looped['bits_per_byte_by_loops']) == {'1', '2', '4'}
  assert (smoke_run / 'bpb_vs_compute.png').stat().st_size > 10_000
  assert '| llama | 6e+09 |' in (smoke_run / 'results.md').read_text()


def test_eval_on_a_text_file_ends_with_the_line_scripts_read(smoke_run, tmp_path):
  text = _corpus(tmp_path / 'mine.txt', docs=40, seed=5)
  out = ok(launch(*SMOKE_POINT, f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={text}'))
  last = out.strip().splitlines()[-1]
  assert last.startswith('bits_per_byte=') and ' perplexity=' in last and ' tokens=' in last, last
  saved = json.loads((smoke_run / 'runs' / 'llama_flops_budget=6e9_s0' / 'eval_mine.txt.json').read_text())
  assert f'bits_per_byte={saved["bits_per_byte"]:.4f}' in last
  bad = tmp_path / 'bad.txt'
  bad.write_bytes(b'fine\n\xc3\x28\n')
  proc = launch(*SMOKE_POINT, f'--workdir={smoke_run}', '--mode=eval', f'--config.data.eval_file={bad}')
  assert proc.returncode != 0 and 'bad.txt:2' in proc.stderr.strip().splitlines()[-1]


def _generate(workdir: pathlib.Path, capsys, **fields) -> list[str]:
  """--mode=generate in this process: the samples it writes."""
  config = lm_configs.get_config('smoke')
  with config.unlocked():
    config.sweep.grid = 'model=llama; flops_budget=6e9; seed=0'
    config.generate.update(prompt='the cat', num_samples=3, **fields)
  capsys.readouterr()
  train.generate(config, str(workdir))
  return capsys.readouterr().out.split('--- sample ')[1:]


def test_generate_is_seeded_and_batched(smoke_run, capsys):
  first = _generate(smoke_run, capsys)
  assert len(first) == 3 and all(s.split('\n', 1)[1].startswith('the cat') for s in first)
  assert _generate(smoke_run, capsys) == first  # The same seed writes the same text.
  assert _generate(smoke_run, capsys, seed=1) != first
  greedy = _generate(smoke_run, capsys, temperature=0.0)
  assert len({s.split('\n', 1)[1] for s in greedy}) == 1  # Greedy: every row of the batch the same.
  cut = _generate(smoke_run, capsys, temperature=0.0, stop='the|a')
  assert all('the' not in s.split('\n', 1)[1][len('the cat'):] for s in cut)  # Cut at the first stop string.


def test_generate_and_interactive_through_launch(smoke_run):
  out = ok(launch(*SMOKE_POINT, f'--workdir={smoke_run}', '--mode=generate', '--config.generate.prompt=the dog'))
  assert 'latest checkpoint (step' in out and out.strip().splitlines()[-1].startswith('the dog')
  long_line = 'the dog ran ' * 40
  proc = subprocess.run([sys.executable, 'launch.py', *SMOKE_POINT, f'--workdir={smoke_run}', '--mode=interactive'],
                        input=f'the cat\n\n{long_line}\n\xe9t\xe9\nquit\nnever read\n', cwd=REPO_ROOT, text=True,
                        capture_output=True, timeout=300, env=launch_env())
  out = ok(proc)
  assert proc.stdout.count('> ') == 5  # A prompt before each line read, the blank one included.
  assert 'its start is left out' in out and 'never read' not in proc.stdout


def test_rwkv7_and_moe_train_report_and_generate(tmp_path, capsys):
  """The other two architectures of the study through the same task: they learn, the mixture of experts reports
  its routing, and RWKV-7 writes text with its recurrent state."""
  config = lm_configs.get_config('smoke')
  with config.unlocked():
    config.sweep.grid = 'model=rwkv7,moe; flops_budget=6e9; seed=0'
  train.train_and_evaluate(config, str(tmp_path))
  results = json.loads((tmp_path / 'results.json').read_text())
  rwkv, moe = results['rwkv7_flops_budget=6e9_s0'], results['moe_flops_budget=6e9_s0']
  for r in (rwkv, moe):
    assert r['bits_per_byte'] < r['byte_bits_per_byte'] and r['train_steps'] == round(6e9 / r['flops_per_step'])
  routing = moe['final_train_metrics']  # The last logged window of the training metrics, routing included.
  assert set(routing) >= {'expert_load_min', 'expert_load_max', 'dropped_fraction', 'load_balance', 'router_z'}
  assert 'expert_load_min' not in rwkv['final_train_metrics']
  text = (tmp_path / 'runs' / 'moe_flops_budget=6e9_s0' / 'results.md').read_text()
  assert (f'{routing["expert_load_min"]:.3f} (min) to {routing["expert_load_max"]:.3f} (max), dropped '
          f'{routing["dropped_fraction"]:.3f}') in text, text
  with config.unlocked():
    config.sweep.grid = 'model=rwkv7; flops_budget=6e9; seed=0'
    config.generate.update(prompt='the cat', num_samples=2, temperature=0.0)
  capsys.readouterr()
  train.generate(config, str(tmp_path))
  samples = capsys.readouterr().out.split('--- sample ')[1:]
  assert len(samples) == 2 and samples[0] == samples[1].replace('2\n', '1\n', 1)
  assert len(samples[0].split('\n', 1)[1]) > len('the cat')


def test_resume_continues_bit_for_bit(tmp_path):
  config = lm_configs.get_config('smoke')
  with config.unlocked():
    config.sweep.grid = ''
    config.flops_budget = 0.0
    config.train.steps, config.train.checkpoint_every = 12, 6
  config.train.steps, config.train.checkpoint_every = 8, 4
  full = tmp_path / 'full'
  train.train_and_evaluate(config, str(full))
  import shutil  # pylint: disable=g-import-not-at-top
  part = tmp_path / 'part'  # The same run, stopped after its step-4 checkpoint.
  shutil.copytree(full, part)
  shutil.rmtree(part / 'checkpoints' / '8')
  (record,) = train.train_and_evaluate(config, str(part))
  assert record['train_steps'] == 8
  first = json.loads((full / 'results.json').read_text())
  assert record['bits_per_byte'] == first['bits_per_byte'] and record['loss'] == first['loss']
  rows = lambda d: [json.loads(l) for l in (d / 'metrics.jsonl').read_text().splitlines() if '"train"' in l]  # pylint: disable=unnecessary-lambda-assignment
  assert [r['loss'] for r in rows(part)] == [r['loss'] for r in rows(full)]


def test_chat_keeps_the_conversation_and_drops_its_oldest_turns_to_fit(tmp_path):
  config = lm_configs.get_config('smoke')
  config.data.files = str(_corpus(tmp_path / 'c.txt'))
  config.data.vocab_size = 300
  tokenizer = lm_task.LMContext(tmp_path).data(config.data).tokenizer
  turns = [('user', 'the cat sat'), ('assistant', 'on a mat'), ('user', 'the dog ran')]
  ids, dropped = generation.chat_prompt(tokenizer, turns, 1000)
  assert dropped == 0
  text = tokenizer.decode(ids, skip_special_tokens=False)
  assert text == ('<|im_start|>user\nthe cat sat<|im_end|>\n<|im_start|>assistant\non a mat<|im_end|>\n'
                  '<|im_start|>user\nthe dog ran<|im_end|>\n<|im_start|>assistant\n')
  last_only, _ = generation.chat_prompt(tokenizer, turns[-1:], 1000)
  short, dropped = generation.chat_prompt(tokenizer, turns, len(last_only))
  assert dropped == 2 and tokenizer.decode(short, skip_special_tokens=False).startswith('<|im_start|>user\nthe dog')


def test_chat_mode_with_piped_input(smoke_run):
  proc = subprocess.run([sys.executable, 'launch.py', *SMOKE_POINT, f'--workdir={smoke_run}', '--mode=interactive',
                         '--config.generate.chat=True', '--config.generate.max_new_tokens=4'],
                        input='hello\nthe cat\n' + 'and the dog ran ' * 10 + '\n', cwd=REPO_ROOT, text=True,
                        capture_output=True, timeout=300, env=launch_env())
  out = ok(proc)
  assert 'Chat: the conversation so far is the context' in out
  assert "is longer than the model's 32 tokens: its first" in out  # The third turn pushes the first ones out.
  assert proc.stdout.count('> ') == 4  # Three lines and the end of input.
