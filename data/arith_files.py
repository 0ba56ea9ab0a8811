"""Reader of arithmetic evaluation files: one problem per line, with an optional given answer.

A line is `a+b`, `a+b=` or `a+b=c` (or with '*'), spaces or tabs allowed
around the numbers and signs; blank lines and lines whose first non-blank
character is '#' are skipped. Operands are written without leading zeros (the
model's prompt is exactly `a+b=`); a given answer is read as a number and only
checked against the true one by the caller (`count_wrong_given`), a wrong one
is not an error. Anything else raises InputError naming `path:line`.
"""
import os

from data import arith_problems
from data import paths
from data.arith_problems import Problem
from data.errors import InputError

Record = tuple[Problem, int | None]  # A problem and the answer the file gives for it (None when none).
_DIGITS = frozenset('0123456789')
_BLANKS = frozenset(' \t')
_ALLOWED = "digits, '+', '*', '=' and spaces"


def _pieces(text: str) -> list[str]:
  """The line's numbers and signs, blanks dropped; an unknown character raises ValueError."""
  pieces: list[str] = []
  in_number = False
  for column, char in enumerate(text, 1):
    if char in _DIGITS:
      if in_number:
        pieces[-1] += char
      else:
        pieces.append(char)
      in_number = True
    elif char in _BLANKS:
      in_number = False
    elif char in '+*=':
      pieces.append(char)
      in_number = False
    else:
      raise ValueError(f'unexpected character {char!r} at column {column} (allowed: {_ALLOWED})')
  return pieces


def _operand(pieces: list[str], which: str, op: str) -> int:
  """The one number of `pieces` (the text on one side of the operator)."""
  if not pieces:
    side = 'before' if which == 'first' else 'after'
    raise ValueError(f"missing the {which} operand {side} '{op}'")
  if len(pieces) > 1:
    raise ValueError(f'space inside the {which} operand ({" ".join(pieces)})')
  if len(pieces[0]) > 1 and pieces[0][0] == '0':
    raise ValueError(f'the {which} operand {pieces[0]} has a leading zero; write {int(pieces[0])}')
  return int(pieces[0])


def parse_line(text: str) -> Record:
  """The problem and given answer of one line; a malformed line raises ValueError saying why."""
  pieces = _pieces(text)
  ops = [p for p in pieces if p in arith_problems.OPS]
  if not ops:
    raise ValueError("no operator; expected a problem like 12+34, 12*34= or 12+34=46")
  if len(ops) > 1:
    raise ValueError(f"{len(ops)} operators ({' '.join(ops)}); one problem per line, like 12+34=46")
  equals = [i for i, p in enumerate(pieces) if p == '=']
  if len(equals) > 1:
    raise ValueError(f"{len(equals)} '=' signs; expected at most one")
  op_index = pieces.index(ops[0])
  end = equals[0] if equals else len(pieces)
  if end < op_index:
    raise ValueError(f"'=' comes before the operator '{ops[0]}'")
  a = _operand(pieces[:op_index], 'first', ops[0])
  b = _operand(pieces[op_index + 1:end], 'second', ops[0])
  given = pieces[end + 1:]
  if len(given) > 1:
    raise ValueError(f'space inside the answer ({" ".join(given)})')
  return Problem(a, b, ops[0]), int(given[0]) if given else None


def read_problem_file(path: str | os.PathLike[str]) -> list[Record]:
  """(problem, given answer or None) for each problem line of the file, in file order.

  A file with no problem at all raises InputError too.
  """
  records = []
  for line_no, line in enumerate(paths.read_text(path, 'problem file').removeprefix('\ufeff').split('\n'), 1):
    stripped = line.strip(' \t\r')
    if not stripped or stripped.startswith('#'):
      continue
    try:
      records.append(parse_line(stripped))
    except ValueError as e:
      raise InputError(f'{path}:{line_no}: {e}: {line[:80]!r}') from None
  if not records:
    raise InputError(f'{path}: no problems (only blank lines and comments); expected lines like 12+34=46')
  return records


def count_wrong_given(records: list[Record]) -> int:
  """How many records give an answer that is not the true one (for a warning; not an error)."""
  return sum(1 for (a, b, op), given in records if given is not None and given != arith_problems.answer(a, b, op))
