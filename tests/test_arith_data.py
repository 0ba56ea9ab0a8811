"""Tests of the arithmetic study's data: problems and formats, tokenizer, splits, batches, eval files."""
import re

import ml_collections
import numpy as np
import pytest

from data import arith_batches
from data import arith_files
from data import arith_problems
from data import arith_tokenizer as tok
from data.arith_problems import Problem, answer, format_problem, parse_answer, split_of
from data.errors import DataConfigError, InputError, MissingInputError


def make_cfg(**overrides) -> ml_collections.ConfigDict:
  cfg = dict(arith_batches.DEFAULTS)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def problem_of_row(tokens_L: np.ndarray) -> Problem:
  """The problem in a row's prompt (`a+b=` at the start, after any left padding)."""
  text = tok.decode(tokens_L).replace(tok.PAD, '')
  a, op, b = re.match(r'([0-9]+)([+*])([0-9]+)=', text).groups()
  return Problem(int(a), int(b), op)


def random_problems(n: int, max_digits: int = 8, seed: int = 0) -> list[Problem]:
  return arith_problems.sample_problems(np.random.default_rng(seed), '+*', 1, max_digits, n)


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize('problem, fmt, prompt, target', [
    ((99, 21, '+'), 'plain', '99+21=', '120<end>'),
    ((99, 21, '+'), 'reversed', '99+21=', '021<end>'),
    ((99, 21, '+'), 'cot', '99+21=', '<think>9+1+0=10 9+2+1=12</think>120<end>'),
    ((999, 1, '+'), 'cot', '999+1=', '<think>9+1+0=10 9+0+1=10 9+0+1=10</think>1000<end>'),
    ((5, 987, '+'), 'cot', '5+987=', '<think>5+7+0=12 0+8+1=9 0+9+0=9</think>992<end>'),
    ((0, 0, '+'), 'plain', '0+0=', '0<end>'),
    ((0, 0, '+'), 'reversed', '0+0=', '0<end>'),
    ((0, 0, '+'), 'cot', '0+0=', '<think>0+0+0=0</think>0<end>'),
    ((120, 5, '+'), 'reversed', '120+5=', '521<end>'),
    ((123, 45, '*'), 'plain', '123*45=', '5535<end>'),
    ((123, 45, '*'), 'reversed', '123*45=', '5355<end>'),
    ((123, 45, '*'), 'cot', '123*45=', '<think>123*5=615 123*40=4920 615+4920=5535</think>5535<end>'),
    ((123, 5, '*'), 'cot', '123*5=', '<think>123*5=615</think>615<end>'),
    ((12, 305, '*'), 'cot', '12*305=', '<think>12*5=60 12*00=0 12*300=3600 60+0=60 60+3600=3660</think>3660<end>'),
    ((0, 7, '*'), 'cot', '0*7=', '<think>0*7=0</think>0<end>'),
    ((7, 10, '*'), 'cot', '7*10=', '<think>7*0=0 7*10=70 0+70=70</think>70<end>'),
    # cot_rev (Deng et al. 2024): units first, padded widths; the sums S_1..S_{m-2}, the answer S_{m-1}.
    ((123, 45, '*'), 'cot_rev', '123*45=', '<think>5160+02940</think>53550<end>'),
    ((3719, 3349, '*'), 'cot_rev', '3719*3349=',
     '<think>17433+067841=132281+0075111=1397921+00075111</think>13945421<end>'),
    ((123, 4, '*'), 'cot_rev', '123*4=', '<think>2940</think>2940<end>'),
    ((12, 305, '*'), 'cot_rev', '12*305=', '<think>060+0000=0600+00630</think>06630<end>'),
    ((99, 21, '+'), 'cot_rev', '99+21=', '021<end>'),
    ((5, 3, '+'), 'cot_rev', '5+3=', '80<end>'),
])
def test_formats_on_known_examples(problem, fmt, prompt, target):
  assert format_problem(*problem, fmt) == (prompt, target)


def test_formats_constant_and_the_old_note_example_is_not_reproduced():
  assert arith_problems.FORMATS == ('plain', 'reversed', 'cot', 'cot_rev')
  note = '<think>9+1=10 9+2+1=11 0+1=1 1+0=1</think>110<end>'
  assert format_problem(99, 21, '+', 'cot')[1] != note
  assert parse_answer(note, 'cot') != answer(99, 21, '+')


def test_addition_cot_steps_are_correct_digit_sums_with_carries():
  for a, b, _ in random_problems(300, seed=1):
    target = format_problem(a, b, '+', 'cot')[1]
    steps = target[len('<think>'):target.index('</think>')].split(' ')
    assert len(steps) == max(len(str(a)), len(str(b)))
    carry = 0
    for i, step in enumerate(steps):
      x, y, c, s = map(int, re.fullmatch(r'(\d)\+(\d)\+([01])=(\d{1,2})', step).groups())
      assert (x, y, c) == (a // 10**i % 10, b // 10**i % 10, carry) and s == x + y + c
      carry = s // 10


def test_multiplication_cot_partial_products_and_running_sums():
  for a, b, _ in random_problems(200, seed=2):
    steps = format_problem(a, b, '*', 'cot')[1].split('</think>')[0][len('<think>'):].split(' ')
    digits = str(b)[::-1]
    assert len(steps) == 2 * len(digits) - 1
    for j, d in enumerate(digits):
      assert steps[j] == f'{a}*{d}{"0" * j}={a * int(d) * 10**j}'
    total = a * int(digits[0])
    for j, step in enumerate(steps[len(digits):], 1):
      partial = a * int(digits[j]) * 10**j
      assert step == f'{total}+{partial}={total + partial}'
      total += partial
    assert total == a * b


def test_units_first_cot_partial_products_and_sums_by_significance():
  """Every run of cot_rev, read units first, is the partial product or running sum it stands for, at its
  fixed width; the answer is n+m digits wide."""
  for a, b, _ in random_problems(300, seed=5):
    n, m = len(str(a)), len(str(b))
    target = format_problem(a, b, '*', 'cot_rev')[1]
    thought, answer_text = target[len('<think>'):].removesuffix('<end>').split('</think>')
    assert len(answer_text) == n + m and int(answer_text[::-1]) == a * b
    chunks = thought.split('+')
    assert len(chunks) == m
    total = 0
    for j, chunk in enumerate(chunks):
      partial = a * (b // 10**j % 10) * 10**j
      total += partial
      written = chunk.split('=')
      assert written[0] == str(partial)[::-1].ljust(n + 1 + j, '0')
      assert len(written) == (2 if 0 < j < m - 1 else 1)
      if len(written) == 2:
        assert written[1] == str(total)[::-1].ljust(n + 1 + j, '0')


def test_internalize_removes_the_first_thought_tokens_then_all_of_them():
  target = format_problem(3719, 3349, '*', 'cot_rev')[1]
  assert arith_problems.thought_tokens(target) == 44
  assert arith_problems.internalize(target, 0) == target
  assert arith_problems.internalize(target, 6) == '<think>067841=132281+0075111=1397921+00075111</think>13945421<end>'
  assert arith_problems.internalize(target, 43) == '<think>1</think>13945421<end>'
  assert arith_problems.internalize(target, 44) == arith_problems.internalize(target, 10**6) == '13945421<end>'
  for removed in (0, 6, 43, 44, 99):  # The answer is read from each.
    assert parse_answer('3719*3349=' + arith_problems.internalize(target, removed), 'cot_rev') == 3719 * 3349
  assert arith_problems.internalize('021<end>', 5) == '021<end>'  # Nothing to remove.
  with pytest.raises(ValueError):
    arith_problems.internalize(target, -1)


def test_internalization_schedule_removes_one_token_per_stage_and_resets_at_each():
  spec = arith_batches.check_config(dict(arith_batches.DEFAULTS, ops='*', max_digits=4, format='cot_rev', seq_len=65,
                                         internalize_every=10, internalize_start=100))
  assert [spec.removed_at(t) for t in (0, 99, 100, 109, 110, 125, 1000)] == [0, 0, 0, 0, 1, 2, 90]
  assert [t for t in range(0, 135) if spec.removal_changes_at(t)] == [110, 120, 130]
  assert spec.eval_removed >= 10**6
  config = dict(arith_batches.DEFAULTS, ops='*', max_digits=4, format='cot_rev', seq_len=65, internalize_every=10,
                internalize_start=100)
  for step, removed in ((99, 0), (110, 1), (200, 10), (100 + 10 * 200, 200)):
    batch = arith_batches.train_batch(config, 0, step, 32)
    fresh = arith_batches.train_batch(dict(config, internalize_every=0), 0, step, 32)  # Same problems, whole CoT.
    for row in range(32):
      text = tok.decode(batch['tokens'][row][:int(batch['loss_mask'][row].sum() + batch['prompt_len'][row])])
      whole = tok.decode(fresh['tokens'][row][:int(fresh['loss_mask'][row].sum() + fresh['prompt_len'][row])])
      prompt = whole[:int(fresh['prompt_len'][row])]
      assert text == prompt + arith_problems.internalize(whole[len(prompt):], removed)
  smooth = arith_batches.train_batch(dict(config, internalize_smoothing=1.0), 0, 150, 256)
  scheduled = arith_batches.train_batch(config, 0, 150, 256)  # The same problems, 5 tokens removed from each.
  extra = scheduled['loss_mask'].sum(1) - smooth['loss_mask'].sum(1)  # Tokens removed beyond the scheduled 5.
  open_rows = (scheduled['tokens'] == tok.THINK_ID).any(1) & (extra < 10)  # Some thought left after either cut.
  assert extra.min() >= 0 and open_rows.sum() > 100
  assert 0.25 < np.mean(extra[open_rows] > 0) < 0.5  # P(o > 0) = e^-1 = 0.37.


@pytest.mark.parametrize('changes, says', [
    (dict(internalize_every=10), "data.format='reversed' has none"), (dict(internalize_every=-1), 'internalize_every'),
    (dict(internalize_start=1.5), 'internalize_start'), (dict(internalize_smoothing=-1.0), 'internalize_smoothing')])
def test_internalization_fields_are_checked(changes, says):
  with pytest.raises(DataConfigError, match=says):
    arith_batches.check_config(dict(arith_batches.DEFAULTS, format='reversed', **changes))


def test_long_operands_work_as_python_ints():
  a, b = 10**99 + 12345, 10**120 - 1
  assert (arith_problems.num_digits(a), arith_problems.num_digits(b)) == (100, 120)
  for op in '+*':
    for fmt in arith_problems.FORMATS:
      prompt, target = format_problem(a, b, op, fmt)
      assert parse_answer(prompt + target, fmt) == answer(a, b, op)
  lengths = [1, 2, 18, 19, 36, 37, 100] * 20
  values = arith_problems.sample_numbers(np.random.default_rng(0), lengths)
  assert [len(str(v)) for v in values] == lengths


def test_sampled_numbers_cover_their_lengths_uniformly():
  values = np.array(arith_problems.sample_numbers(np.random.default_rng(3), [1] * 5000 + [2] * 5000))
  ones, twos = values[:5000], values[5000:]
  assert set(ones.tolist()) == set(range(10)) and twos.min() >= 10 and twos.max() <= 99
  assert abs(np.mean(ones) - 4.5) < 0.2 and abs(np.mean(twos) - 54.5) < 1.5


# ---------------------------------------------------------------------------- parse_answer


def test_parse_answer_round_trips_every_format_as_text_and_tokens():
  for i, (a, b, op) in enumerate(random_problems(300, seed=4)):
    for fmt in arith_problems.FORMATS:
      prompt, target = format_problem(a, b, op, fmt)
      true = answer(a, b, op)
      assert parse_answer(target, fmt) == true
      assert parse_answer(prompt + target, fmt) == true
      ids = [tok.PAD_ID] * (i % 3) + tok.encode(prompt + target) + [tok.PAD_ID, 99, tok.END_ID]
      assert parse_answer(np.array(ids), fmt) == true  # Left padding, then junk after <end>.
      assert parse_answer(ids, fmt) == true


@pytest.mark.parametrize('text, fmt', [
    ('', 'plain'), ('<end>', 'plain'), ('120', 'plain'), ('12 0<end>', 'plain'), ('12+<end>', 'plain'),
    ('0120<end>', 'plain'), ('99+21=0120<end>', 'plain'), ('99+21=12=0<end>', 'plain'), ('12=0<end>', 'plain'),
    ('021<end>', 'cot'), ('<think>9+1+0=10</think><end>', 'cot'), ('<think>9+1+0=10</think>1 20<end>', 'cot'),
    ('<think><end></think>120<end>', 'cot'), ('0210<end>', 'reversed'), ('99+21=<end>', 'reversed'),
])
def test_parse_answer_rejects_malformed_text(text, fmt):
  assert parse_answer(text, fmt) is None


def test_parse_answer_rejects_malformed_tokens():
  assert parse_answer([5, 6], 'plain') is None  # No <end>.
  assert parse_answer([5, 40, 6, tok.END_ID], 'plain') is None  # An id outside the vocabulary.
  assert parse_answer([tok.END_ID, 5, tok.END_ID], 'plain') is None  # Nothing before the first <end>.
  assert parse_answer([5, tok.END_ID, 40], 'plain') == 1


# ---------------------------------------------------------------------------- tokenizer


def test_tokenizer_vocabulary_and_round_trip():
  assert tok.VOCAB[:4] == ('<pad>', '<end>', '<think>', '</think>') and tok.PAD_ID == 0
  assert tok.vocab_size == tok.VOCAB_SIZE == len(tok.VOCAB) == 18
  assert [tok.VOCAB[i] for i in tok.DIGIT_IDS] == list('0123456789')
  assert tok.VOCAB[tok.END_ID] == '<end>'
  assert tok.encode('9+1= <think></think><end><pad>') == [
      13, tok.PLUS_ID, 5, tok.EQUALS_ID, tok.SPACE_ID, tok.THINK_ID, tok.END_THINK_ID, tok.END_ID, tok.PAD_ID]
  for a, b, op in random_problems(100, seed=5):
    text = ''.join(format_problem(a, b, op, 'cot'))
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(np.array(tok.encode(text), np.int32)) == text
  ids_BxL, lengths_B = tok.encode_padded(['1+2=', '<think>', ''], 6)
  assert lengths_B.tolist() == [4, 1, 0]
  assert ids_BxL.tolist() == [[5, 14, 6, 16, 0, 0], [2, 0, 0, 0, 0, 0], [0] * 6]


@pytest.mark.parametrize('text, char', [('12a', "'a'"), ('1<en', "'<'"), ('1+2\n', "'\\n'"), ('3×4', "'×'"),
                                        ('\x01', "'\\x01'")])
def test_tokenizer_unknown_character_raises_naming_it(text, char):
  with pytest.raises(InputError, match=re.escape(char)):
    tok.encode(text)
  with pytest.raises(InputError, match=re.escape(char)):
    tok.encode_padded(['1+1=', text])


def test_tokenizer_decode_rejects_ids_outside_vocab():
  with pytest.raises(InputError, match='18'):
    tok.decode([1, 18])


# ---------------------------------------------------------------------------- splits


def test_commuted_twins_share_a_split():
  for a, b, op in random_problems(3000, seed=6):
    assert split_of(a, b, op, 's', 0.2, 0.2) == split_of(b, a, op, 's', 0.2, 0.2)


def test_split_fractions_roughly_as_configured_and_salt_matters():
  problems = random_problems(20000, seed=7)
  splits = [split_of(*p, salt='x', val_fraction=0.1, test_fraction=0.2) for p in problems]
  counts = {s: splits.count(s) / len(splits) for s in arith_problems.SPLITS}
  assert abs(counts['val'] - 0.1) < 0.012 and abs(counts['test'] - 0.2) < 0.015
  other = [split_of(*p, salt='y', val_fraction=0.1, test_fraction=0.2) for p in problems]
  assert sum(s != t for s, t in zip(splits, other)) > 0.2 * len(splits)
  with pytest.raises(DataConfigError, match='data.val_fraction'):
    split_of(1, 2, '+', val_fraction=0.6, test_fraction=0.4)


def test_train_batches_never_hold_a_val_or_test_problem():
  cfg = make_cfg(ops='+*', min_digits=1, max_digits=2, val_fraction=0.15, test_fraction=0.15, seq_len=12)
  seen = set()
  for step in range(40):
    batch = arith_batches.train_batch(cfg, 0, step, 256)
    for row in batch['tokens']:
      seen.add(problem_of_row(row))
  held = [p for p in seen if split_of(*p, cfg.split_salt, 0.15, 0.15) != 'train']
  assert not held
  # Without the filter ~30% of the 10k draws would be held out; and every one-digit train problem shows up.
  assert len(seen) > 4000
  one_digit = {Problem(a, b, op) for a in range(10) for b in range(10) for op in '+*'}
  assert {p for p in one_digit if split_of(*p, cfg.split_salt, 0.15, 0.15) == 'train'} == one_digit & seen


# ---------------------------------------------------------------------------- train batches


def test_train_batch_deterministic_in_seed_step_and_process():
  cfg = make_cfg(abacus_max_offset=10)
  first = arith_batches.train_batch(cfg, 3, 7, 32)
  again = arith_batches.train_batch(cfg, 3, 7, 32)
  assert all(np.array_equal(first[k], again[k]) for k in first)
  for args in ((3, 8, 32, 0), (4, 7, 32, 0), (3, 7, 32, 1)):
    assert not np.array_equal(first['tokens'], arith_batches.train_batch(cfg, *args)['tokens'])


@pytest.mark.parametrize('fmt', arith_problems.FORMATS)
def test_train_batch_arrays_match_the_formatted_problems(fmt):
  cfg = make_cfg(ops='+*', max_digits=4, format=fmt)
  cfg.seq_len = arith_batches.required_seq_len(cfg) + 2
  batch = arith_batches.train_batch(cfg, 0, 1, 64)
  length = cfg.seq_len
  expect = {'tokens': (np.int32, (64, length)), 'loss_mask': (np.float32, (64, length)),
            'digit_pos': (np.int32, (64, length)), 'prompt_len': (np.int32, (64,)), 'a_len': (np.int32, (64,)),
            'b_len': (np.int32, (64,))}
  assert {k: (v.dtype, v.shape) for k, v in batch.items()} == expect
  for i, row in enumerate(batch['tokens']):
    a, b, op = problem_of_row(row)
    prompt, target = format_problem(a, b, op, fmt)
    ids, n_prompt = tok.encode(prompt + target), len(prompt)
    assert row.tolist() == ids + [tok.PAD_ID] * (length - len(ids))
    mask = [0.0] * n_prompt + [1.0] * (len(ids) - n_prompt) + [0.0] * (length - len(ids))
    assert batch['loss_mask'][i].tolist() == mask
    assert (batch['prompt_len'][i], batch['a_len'][i], batch['b_len'][i]) == (n_prompt, len(str(a)), len(str(b)))
    assert 1 <= batch['a_len'][i] <= 4 and 1 <= batch['b_len'][i] <= 4


def test_digit_pos_by_hand():
  batch = arith_batches.encode_examples([Problem(123, 45, '+')], 'reversed', 12)
  assert tok.decode(batch['tokens'][0]) == '123+45=861<end><pad>'
  assert batch['digit_pos'][0].tolist() == [3, 2, 1, 0, 2, 1, 0, 1, 2, 3, 0, 0]
  batch = arith_batches.encode_examples([Problem(99, 21, '+')], 'cot', 40)
  #           9  9  +  2  1  = <t> 9  +  1  +  0  =  1  0 ' ' 9  +  2  +  1  =  1  2 </t> 1  2  0 <e>
  expected = [2, 1, 0, 2, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1, 2, 0, 1, 2, 3, 0]
  assert batch['digit_pos'][0].tolist() == expected + [0] * (40 - len(expected))
  prompts = arith_batches.encode_prompts([Problem(123, 45, '+'), Problem(7, 0, '*')], 'reversed', 8)
  assert prompts['tokens'].tolist() == [[0] + tok.encode('123+45='), [0] * 4 + tok.encode('7*0=')]
  assert prompts['digit_pos'].tolist() == [[0, 3, 2, 1, 0, 2, 1, 0], [0, 0, 0, 0, 1, 0, 1, 0]]
  assert prompts['prompt_len'].tolist() == [7, 4] and prompts['a_len'].tolist() == [3, 1]
  assert arith_batches.encode_prompts([Problem(1, 22, '+')], 'cot')['tokens'].shape == (1, 5)


def test_equals_row_puts_the_prompts_equals_below_the_units_and_every_digit_one_row_up():
  """abacus_equals_row: the prompt's '=' (only it: not a chain of thought's) is row 1, each digit its usual row + 1;
  a training offset moves the '=' with the digits; the same rows for left-padded prompts."""
  batch = arith_batches.encode_examples([Problem(123, 45, '+')], 'reversed', 12, equals_row=True)
  assert batch['digit_pos'][0].tolist() == [4, 3, 2, 0, 3, 2, 1, 2, 3, 4, 0, 0]
  batch = arith_batches.encode_examples([Problem(9, 1, '+')], 'cot', 20, equals_row=True)
  #                                    9  +  1  = <t> 9  +  1  +  0  =  1  0 </t> 1  0 <e>
  assert batch['digit_pos'][0].tolist()[:16] == [2, 0, 2, 1, 0, 2, 0, 2, 0, 2, 0, 2, 3, 0, 2, 3]
  prompts = arith_batches.encode_prompts([Problem(123, 45, '+'), Problem(7, 0, '*')], 'reversed', 8, equals_row=True)
  assert prompts['digit_pos'].tolist() == [[0, 4, 3, 2, 0, 3, 2, 1], [0, 0, 0, 0, 2, 0, 2, 1]]
  cfg = make_cfg(max_digits=4, abacus_max_offset=5, abacus_equals_row=True)
  batch = arith_batches.train_batch(cfg, 0, 0, 64)
  base = arith_batches.encode_examples([problem_of_row(r) for r in batch['tokens']], 'plain', cfg.seq_len,
                                       equals_row=True)
  equals_B = batch['prompt_len'] - 1
  rows_B = np.arange(64)
  assert np.all(batch['tokens'][rows_B, equals_B] == tok.EQUALS_ID)
  offset_B = batch['digit_pos'][rows_B, equals_B] - 1
  assert np.all((offset_B >= 0) & (offset_B <= 5)) and len(set(offset_B.tolist())) > 1
  assert np.array_equal(batch['digit_pos'], np.where(base['digit_pos'] > 0, base['digit_pos'] + offset_B[:, None], 0))
  with pytest.raises(DataConfigError, match=re.escape("data.abacus_equals_row must be True or False, got 1")):
    arith_batches.check_config(make_cfg(abacus_equals_row=1))


def test_abacus_offset_is_one_per_example_within_range():
  cfg = make_cfg(max_digits=5, abacus_max_offset=7)
  batch = arith_batches.train_batch(cfg, 0, 0, 128)
  plain = arith_batches.encode_examples([problem_of_row(r) for r in batch['tokens']], 'plain', cfg.seq_len)
  assert np.array_equal(batch['digit_pos'] == 0, plain['digit_pos'] == 0)
  offsets = set()
  for got, base in zip(batch['digit_pos'], plain['digit_pos']):
    diff = set((got - base)[base > 0].tolist())
    assert len(diff) == 1 and 0 <= min(diff) <= 7
    offsets |= diff
  assert offsets == set(range(8))


def test_required_seq_len_is_the_longest_example():
  all_problems = [(a, b) for a in range(100) for b in range(100)]
  for fmt in arith_problems.FORMATS:
    for op in '+*':
      longest = max(len(tok.encode(''.join(format_problem(a, b, op, fmt)))) for a, b in all_problems)
      assert arith_batches.required_seq_len(make_cfg(ops=op, max_digits=2, format=fmt)) == longest
  assert arith_batches.required_seq_len(make_cfg(ops='+*', max_digits=3)) == 3 + 1 + 3 + 1 + 6 + 1


def test_longest_number_is_the_longest_digit_run_of_any_example():
  all_problems = [(a, b) for a in range(100) for b in range(100)]
  for fmt in arith_problems.FORMATS:
    for op in '+*':
      longest = max(len(run) for a, b in all_problems for run in re.findall('[0-9]+', ''.join(format_problem(a, b, op, fmt))))
      assert arith_batches.longest_number(op, 2, fmt) == longest
  assert arith_batches.longest_number('+*', 6, 'reversed') == 12


def test_seq_len_too_small_raises_naming_data_seq_len():
  cfg = make_cfg(max_digits=6, seq_len=21)  # 999999+999999=1999998<end> is 22 tokens.
  with pytest.raises(DataConfigError, match=r'data\.seq_len=21 .*22'):
    arith_batches.train_batch(cfg, 0, 0, 8)
  with pytest.raises(DataConfigError, match=r'data\.seq_len=8 .*9'):
    arith_batches.encode_examples([Problem(1, 2, '+'), Problem(12, 34, '+')], 'plain', 8)


@pytest.mark.parametrize('field, value', [
    ('ops', '-'), ('ops', ''), ('ops', '++'), ('min_digits', 0), ('max_digits', 0), ('format', 'latent'),
    ('seq_len', 0), ('val_fraction', 1.0), ('test_fraction', -0.1), ('val_fraction', 0.5), ('split_salt', 1.5),
    ('abacus_max_offset', -1), ('min_digits', True),
])
def test_bad_config_values_name_their_key(field, value):
  overrides = {field: value, 'test_fraction': 0.5} if (field, value) == ('val_fraction', 0.5) else {field: value}
  cfg = make_cfg(**overrides)
  with pytest.raises(DataConfigError, match=rf'data\.{field}'):
    arith_batches.train_batch(cfg, 0, 0, 4)


def test_missing_config_field_is_named():
  cfg = dict(arith_batches.DEFAULTS)
  del cfg['split_salt']
  with pytest.raises(DataConfigError, match=r'data\.split_salt is missing'):
    arith_batches.train_batch(cfg, 0, 0, 4)
  assert set(arith_batches.BATCH_FIELDS) == set(arith_batches.DEFAULTS)


# ---------------------------------------------------------------------------- evaluation sets


def test_eval_set_distinct_in_split_stratified_and_stable():
  cfg = make_cfg(ops='+*', max_digits=3, val_fraction=0.1, test_fraction=0.1)
  problems = arith_batches.eval_set(cfg, 'val', 20)
  assert len(set(problems)) == len(problems)
  assert all(split_of(*p, cfg.split_salt, 0.1, 0.1) == 'val' for p in problems)
  per_stratum = {}
  for a, b, op in problems:
    key = (op, len(str(a)), len(str(b)))
    per_stratum[key] = per_stratum.get(key, 0) + 1
  assert len(per_stratum) == 2 * 9
  all_one_digit = {(a, b) for a in range(10) for b in range(10)
                   if split_of(a, b, '+', cfg.split_salt, 0.1, 0.1) == 'val'}
  assert 0 < len(all_one_digit) < 20
  assert {(a, b) for a, b, op in problems if op == '+' and a < 10 and b < 10} == all_one_digit
  assert all(n == 20 for (_, la, lb), n in per_stratum.items() if (la, lb) != (1, 1))
  assert arith_batches.eval_set(cfg, 'val', 20) == problems
  assert arith_batches.eval_set(cfg, 'val', 20, seed=1) != problems
  wider = arith_batches.eval_set(cfg, 'val', 20, max_digits=4)
  assert set(problems) < set(wider) and len(wider) > len(problems)
  test = arith_batches.eval_set(cfg, 'test', 20, min_digits=2, max_digits=2)
  assert not set(test) & set(problems) and all(split_of(*p, cfg.split_salt, 0.1, 0.1) == 'test' for p in test)


def test_eval_set_out_of_distribution_lengths():
  cfg = make_cfg(ops='*', max_digits=3)
  problems = arith_batches.eval_set(cfg, 'test', 5, min_digits=25, max_digits=26)
  assert len(problems) == 4 * 5 and len(set(problems)) == 20
  assert all(25 <= len(str(p.a)) <= 26 and 25 <= len(str(p.b)) <= 26 and p.op == '*' for p in problems)
  assert all(split_of(*p, cfg.split_salt, 0.02, 0.02) == 'test' for p in problems)
  batch = arith_batches.encode_prompts(problems, 'plain')
  assert batch['tokens'].shape == (20, 54) and batch['digit_pos'].max() == 26
  train = arith_batches.eval_set(cfg, 'train', 3, min_digits=1, max_digits=1)
  assert all(split_of(*p, cfg.split_salt, 0.02, 0.02) == 'train' for p in train) and len(train) == 3


# ---------------------------------------------------------------------------- eval files


def write(tmp_path, text: str | bytes, name: str = 'problems.txt') -> str:
  path = tmp_path / name
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text, encoding='utf-8')
  return str(path)


def test_reads_a_good_problem_file(tmp_path):
  path = write(tmp_path, '# sums\n\n12+34\n 5 * 6 =\r\n7+8=15\n  # indented comment\n\t99 + 1 = 101\n123*0=\n')
  records = arith_files.read_problem_file(path)
  assert records == [(Problem(12, 34, '+'), None), (Problem(5, 6, '*'), None), (Problem(7, 8, '+'), 15),
                     (Problem(99, 1, '+'), 101), (Problem(123, 0, '*'), None)]
  assert arith_files.count_wrong_given(records) == 1  # 99+1 is 100, not 101; that is not a read error.


@pytest.mark.parametrize('line, why', [
    ('1-2', "unexpected character '-'"), ('+3', 'missing the first operand'), ('3*', 'missing the second operand'),
    ('1+2*3', '2 operators'), ('1 2+3', 'space inside the first operand'), ('1+2=3=3', "2 '=' signs"),
    ('007+1', 'leading zero'), ('12', 'no operator'), ('1=2+3', "'=' comes before"), ('1+2=3 4', 'space inside'),
    ('1+2 # note', "unexpected character '#'"), ('=', 'no operator'),
])
def test_malformed_line_names_file_and_line(tmp_path, line, why):
  path = write(tmp_path, f'# header\n1+1=2\n{line}\n4+4\n')
  with pytest.raises(InputError, match=re.escape(f'{path}:3: ') + '.*' + re.escape(why)):
    arith_files.read_problem_file(path)


def test_missing_directory_non_utf8_and_empty_files(tmp_path):
  with pytest.raises(MissingInputError, match='does not exist'):
    arith_files.read_problem_file(tmp_path / 'absent.txt')
  with pytest.raises(MissingInputError, match='is a directory'):
    arith_files.read_problem_file(tmp_path)
  path = write(tmp_path, b'1+2\n3+4\n5+\xff6\n', 'latin.txt')
  with pytest.raises(InputError, match=re.escape(f'{path}:3: problem file is not UTF-8')):
    arith_files.read_problem_file(path)
  with pytest.raises(InputError, match='no problems'):
    arith_files.read_problem_file(write(tmp_path, '# nothing\n\n', 'empty.txt'))


def test_running_sums_by_hand_and_their_units_are_the_answer_digits():
  assert arith_problems.running_sums(37, 49, '*') == [63, 61, 18, 1]  # 1813: 7*9; 3*9+7*4+6; 3*4+6; 1.
  assert arith_problems.running_sums(99, 21, '+') == [10, 12, 1]
  for a, b, op in random_problems(300, seed=6):
    sums = arith_problems.running_sums(a, b, op)
    assert ''.join(str(r % 10) for r in sums) == str(answer(a, b, op))[::-1]
    assert sums[-1] < 10  # The last digit carries nothing on.
  batch = arith_batches.encode_examples([Problem(37, 49, '*'), Problem(5, 5, '+')], 'reversed', 12, running_sums=True)
  assert batch['running_sum'][0].tolist() == [0] * 6 + [63, 61, 18, 1] + [0, 0]
  assert batch['running_sum_mask'][1].tolist() == [0] * 4 + [1, 1] + [0] * 6  # 5+5=01<end>: two digits.
  assert 'running_sum' not in arith_batches.encode_examples([Problem(37, 49, '*')], 'reversed', 40)  # Not asked.
  assert 'running_sum' in arith_batches.train_batch(make_cfg(ops='*', max_digits=4, format='reversed'), 0, 3, 8,
                                                    running_sums=True)
  with pytest.raises(ValueError, match="'reversed'"):
    arith_batches.encode_examples([Problem(37, 49, '*')], 'cot_rev', 40, running_sums=True)
