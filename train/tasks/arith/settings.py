"""What an arithmetic run's config means beyond its fields: its label, its Abacus rows, and the checks of the
fields against each other (before any work, one line naming the key)."""
from typing import Any

import ml_collections

from data import arith_batches
from data.arith_problems import Problem
from train.errors import ConfigError
from train.tasks.arith import objective


def run_label(config: ml_collections.ConfigDict) -> str:
  """'reversed', 'cot', 'plain', or 'reversed, looped x8' for a looped model; ', = row' with data.abacus_equals_row,
  ', internalised' with data.internalize_every, ', running-sum loss' with train.running_sum_weight."""
  fmt = str(config.data.format) + (', = row' if config.data.abacus_equals_row else '')
  if int(config.data.get('internalize_every', 0)):
    fmt += ', internalised'
  if float(config.train.get('running_sum_weight', 0.0)):
    fmt += ', running-sum loss'
  if config.model.name != 'looped':
    return fmt
  random_loops = int(config.train.random_loops)
  return f'{fmt}, looped x{config.model.loops}' + (f' (trained at 1-{random_loops})' if random_loops else '')


def abacus_rows(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The Abacus keywords of generation.generate and TeacherForced: eval.abacus_offset, data.abacus_equals_row."""
  return dict(abacus_offset=int(config.eval.abacus_offset), equals_row=bool(config.data.abacus_equals_row))


def trained_loops(config: ml_collections.ConfigDict) -> int | None:
  """The core applications a looped model trained with (None for a stacked one)."""
  return int(config.model.loops) if config.model.name == 'looped' else None


def _highest_row(config: ml_collections.ConfigDict, longest: int, offset: int) -> int:
  """The highest Abacus position of numbers of `longest` digits at `offset` (one more with the '=' row)."""
  return longest + offset + int(bool(config.data.abacus_equals_row))


def check(config: ml_collections.ConfigDict) -> None:
  """Data and eval fields and how they meet the model's positions."""
  arith_batches.check_config(objective.data_spec(config))
  for key in ('num_val', 'num_test', 'num_per_length', 'batch_size', 'max_digits', 'loop_multiplier'):
    if int(config.eval[key]) < 1:
      raise ConfigError(f'eval.{key}={config.eval[key]} must be >= 1')
  offset = int(config.eval.abacus_offset)
  if offset < 0:
    raise ConfigError(f'eval.abacus_offset={offset} must be >= 0')
  position = str(config.model.position)
  if offset and 'abacus' not in position:
    raise ConfigError(f'eval.abacus_offset={offset} needs Abacus positions (model.position={position!r})')
  if config.data.abacus_equals_row and 'abacus' not in position:
    raise ConfigError(f'data.abacus_equals_row=True needs Abacus positions (model.position={position!r})')
  if 'abacus' in position:
    _check_abacus_table(config)
  weight = config.train.get('running_sum_weight', 0.0)
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
    raise ConfigError(f'train.running_sum_weight={weight!r} must be a number >= 0')
  if weight and str(config.data.format) != 'reversed':
    raise ConfigError(f'train.running_sum_weight={weight} regresses the running sum behind each answer digit, '
                      f"written units first: it needs data.format='reversed', not {config.data.format!r}")
  if weight and int(config.model.get('probe_outputs', 0)) < 1:
    raise ConfigError(f'train.running_sum_weight={weight} needs the model\'s linear probe: set model.probe_outputs=1')


def _check_abacus_table(config: ml_collections.ConfigDict) -> None:
  """Training and evaluation digit positions, offsets included, fit model.max_digit_pos (else they would be clipped)."""
  ops, fmt, table = str(config.data.ops), str(config.data.format), int(config.model.max_digit_pos)
  for what, digits_key, digits, offset_key, offset in (
      ('training', 'data.max_digits', config.data.max_digits, 'data.abacus_max_offset', config.data.abacus_max_offset),
      ('evaluation', 'eval.max_digits', config.eval.max_digits, 'eval.abacus_offset', config.eval.abacus_offset)):
    longest = arith_batches.longest_number(ops, int(digits), fmt)
    highest = _highest_row(config, longest, int(offset))
    if highest > table:
      raise ConfigError(f'model.max_digit_pos={table} is too small: {what} writes numbers of {longest} digits '
                        f'({digits_key}={digits}) at {offset_key}={offset}, positions up to {highest}'
                        + (' with data.abacus_equals_row' if config.data.abacus_equals_row else '')
                        + f'; set model.max_digit_pos >= {highest}')


def check_file_fits_abacus_table(config: ml_collections.ConfigDict, problems: list[Problem], file: str,
                                 lengths: list[int]) -> None:
  """An eval file's longest number (`lengths`: each problem's), at eval.abacus_offset, fits model.max_digit_pos."""
  if 'abacus' not in str(config.model.position) or not problems:
    return
  fmt, offset, table = str(config.data.format), int(config.eval.abacus_offset), int(config.model.max_digit_pos)
  longest = max(arith_batches.longest_number(p.op, n, fmt) for p, n in zip(problems, lengths))
  highest = _highest_row(config, longest, offset)
  if highest > table:
    raise ConfigError(f'model.max_digit_pos={table} is too small for {file}: its problems write numbers '
                      f'of up to {longest} digits, at eval.abacus_offset={offset} positions up to {highest}'
                      + (' with data.abacus_equals_row' if config.data.abacus_equals_row else ''))
