"""GSM8K (Cobbe et al. 2021): grade-school math problems, prompted and scored as the community scores them.

Files are JSONL, one `{"question", "answer"}` per line, the answer's last line `#### <number>` (the shared copy
`{shared}/gsm8k/{train,test}.jsonl`, or HF `datasets` 'openai/gsm8k' saved as JSONL by `save_split`).

Prompt formats (`FORMATS`):
  gsm8k      lm-evaluation-harness's `gsm8k`: k-shot (5) "Question: ...\\nAnswer: <solution>" exemplars from the
             train split, then "Question: <q>\\nAnswer:"; answers extracted strictly from "#### N" or flexibly
             as the last number written
  gsm8k_cot  lm-evaluation-harness's `gsm8k_cot`: the 8 fixed exemplars of Wei et al. (2022) "Q: ...\\nA: ...
             The answer is N.", then "Q: <q>\\nA:"; strict extraction from "The answer is N", flexible as above
  chat       zero shot, the question as the user's message in the model's chat template, asked to end with
             "#### N"; strict from "#### N", flexible as above
Numbers are compared as lm-evaluation-harness compares them: commas, `$` and a trailing `.` removed, then equal
strings.

Supervised fine-tuning (`sft_rows`): the prompt "Question: <q>\nAnswer:" and an answer in one of
`ANSWER_FORMATS`, the loss on the answer only:
  solution   the natural-language solution and "#### N" (explicit chain of thought)
  equations  the calculator annotations only, "<<48/2=24>> <<48+24=72>> #### 72" (GSM8K-Aug's chain of thought)
  answer     "#### N" alone (no chain of thought)
"""
import dataclasses
import json
from typing import Any
import pathlib
import random
import re

import numpy as np

from data.errors import InputError, MissingInputError

FORMATS = ('gsm8k', 'gsm8k_cot', 'chat')
STOPS = {'gsm8k': ('Question:', '</s>', '<|im_end|>'), 'gsm8k_cot': ('Q:', '</s>', '<|im_end|>'),
         'chat': ('<|im_end|>', '</s>')}
CHAT_INSTRUCTION = 'Solve the problem step by step. End with the final answer on its own line as "#### <number>".'
_STRICT = {'gsm8k': r'#### (\-?[0-9\.\,]+)', 'gsm8k_cot': r'The answer is (\-?[0-9\.\,]+).',
           'chat': r'#### (\-?[0-9\.\,]+)'}
_FLEXIBLE = r'(-?[$0-9.,]{2,})|(-?[0-9]+)'
_IGNORED = (r',', r'\$', r'(?s).*#### ', r'\.$')

# Wei et al. (2022)'s eight exemplars, as lm-evaluation-harness's gsm8k_cot writes them.
COT_EXEMPLARS = (
    ('There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, '
     'there will be 21 trees. How many trees did the grove workers plant today?',
     'There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have '
     'been 21 - 15 = 6. The answer is 6.'),
    ('If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?',
     'There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.'),
    ('Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?',
     'Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, '
     'they had 74 - 35 = 39. The answer is 39.'),
    ('Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did '
     'Jason give to Denny?',
     'Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. '
     'The answer is 8.'),
    ('Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have '
     'now?',
     'Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. '
     'The answer is 9.'),
    ('There were nine computers in the server room. Five more computers were installed each day, from monday to '
     'thursday. How many computers are now in the server room?',
     'There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers '
     'were added. 9 + 20 is 29. The answer is 29.'),
    ('Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf '
     'balls did he have at the end of wednesday?',
     'Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he '
     'had 35 - 2 = 33 golf balls. The answer is 33.'),
    ('Olivia has $23. She bought five bagels for $3 each. How much money does she have left?',
     'Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars '
     'left. 23 - 15 is 8. The answer is 8.'),
)


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str
  answer: str  # The whole solution, ending "#### N".
  where: str  # file:line, for messages.

  @property
  def target(self) -> str:
    """The final number as the answer writes it after '#### '."""
    return self.answer.split('####')[-1].strip()

  @property
  def solution(self) -> str:
    """The natural-language solution without the final '#### N' line."""
    return self.answer.split('####')[0].rstrip()

  @property
  def equations(self) -> list[str]:
    """The calculator annotations of the solution (`<<48/2=24>>` gives '48/2=24'), as GSM8K-Aug writes its CoT."""
    return re.findall(r'<<([^<>]*)>>', self.answer)


def read(path: str | pathlib.Path, limit: int = 0) -> list[Problem]:
  """Problems of a GSM8K JSONL file (the first `limit`; 0 = all); a bad line is one error naming file and line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MissingInputError(f'{path} does not exist (a GSM8K JSONL file: {{"question": ..., "answer": ...}} a line)')
  problems = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f'{path}:{number}'
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f'{where}: not JSON ({e.msg})') from None
      for key in ('question', 'answer'):
        if not isinstance(row, dict) or not isinstance(row.get(key), str):
          raise InputError(f'{where}: no {key!r} text field (a GSM8K line has "question" and "answer")')
      if '#### ' not in row['answer']:
        raise InputError(f"{where}: the answer has no '#### ' line with the final number")
      problems.append(Problem(row['question'], row['answer'], where))
      if limit and len(problems) == limit:
        break
  if not problems:
    raise InputError(f'{path} holds no problems')
  return problems


def save_split(split: str, path: str | pathlib.Path) -> pathlib.Path:
  """HF `datasets` 'openai/gsm8k' (config 'main') `split` written as GSM8K JSONL (needs the hub or its cache)."""
  import datasets  # pylint: disable=import-outside-toplevel
  rows = datasets.load_dataset('openai/gsm8k', 'main', split=split)
  path = pathlib.Path(path)
  path.write_text(''.join(json.dumps({'question': r['question'], 'answer': r['answer']}) + '\n' for r in rows),
                  encoding='utf-8')
  return path


def normalize(number: str) -> str:
  """A number as lm-evaluation-harness compares it: commas, '$', anything up to '#### ' and a final '.' removed."""
  for pattern in _IGNORED:
    number = re.sub(pattern, '', number)
  return number.strip().lower()


def extract(completion: str, fmt: str) -> tuple[str | None, str | None]:
  """(strict, flexible) answers of a completion; None where the pattern does not occur."""
  strict = re.search(_STRICT[fmt], completion)
  flexible = [m for m in re.findall(_FLEXIBLE, completion)]
  last = next((a or b for a, b in reversed(flexible) if a or b), None)
  return (strict.group(1) if strict else None), last


def is_correct(extracted: str | None, target: str) -> bool:
  return extracted is not None and normalize(extracted) == normalize(target)


def few_shot(train: list[Problem], k: int, index: int, seed: int) -> list[Problem]:
  """k train exemplars for test problem `index`: a fixed draw per (seed, index), the same every run."""
  return random.Random(seed * 1_000_003 + index).sample(train, k) if k else []


def prompt(problem: Problem, fmt: str, exemplars: list[Problem] = ()) -> str:
  """The text before the model's answer (chat: the user's message; the template is the model's)."""
  if fmt == 'gsm8k':
    shots = ''.join(f'Question: {p.question}\nAnswer: {p.answer}\n\n' for p in exemplars)
    return f'{shots}Question: {problem.question}\nAnswer:'
  if fmt == 'gsm8k_cot':
    shots = ''.join(f'Q: {q}\nA: {a}\n\n' for q, a in COT_EXEMPLARS)
    return f'{shots}Q: {problem.question}\nA:'
  if fmt == 'chat':
    return f'{problem.question}\n\n{CHAT_INSTRUCTION}'
  raise ValueError(f'unknown GSM8K format {fmt!r}; choose from {FORMATS}')


ANSWER_FORMATS = ('solution', 'equations', 'answer')


def answer_text(problem: Problem, fmt: str) -> str:
  """What a fine-tuned model learns to write after "Answer:" (module docstring)."""
  if fmt == 'solution':
    return f' {problem.solution}\n#### {problem.target}'
  if fmt == 'equations':
    return ' ' + ' '.join(f'<<{e}>>' for e in problem.equations) + f' #### {problem.target}'
  if fmt == 'answer':
    return f' #### {problem.target}'
  raise ValueError(f'unknown answer format {fmt!r}; choose from {ANSWER_FORMATS}')


def sft_rows(problems: list[Problem], tokenizer: Any, fmt: str, seq_len: int, end_id: int,
             pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
  """(int32[N, seq_len + 1] tokens, float32[N, seq_len] weights, problems left out): each row the prompt, the
  answer and the end token, padded; weight 1 where the next token is the answer's (or the end). Problems whose
  longest answer (the solution) does not fit in seq_len + 1 tokens are left out (counted), so that every format
  trains on the same problems."""
  prompts = tokenizer.encode_batch([prompt(p, 'gsm8k') for p in problems], add_special_tokens=False)
  answers = tokenizer.encode_batch([answer_text(p, fmt) for p in problems], add_special_tokens=False)
  longest = tokenizer.encode_batch([answer_text(p, 'solution') for p in problems], add_special_tokens=False)
  rows, weights = [], []
  for q, a, l in zip(prompts, answers, longest):
    ids = q.ids + a.ids + [end_id]
    if len(q.ids) + max(len(l.ids), len(a.ids)) + 1 > seq_len + 1:
      continue
    row = np.full(seq_len + 1, pad_id, np.int32)
    row[:len(ids)] = ids
    w = np.zeros(seq_len, np.float32)
    w[len(q.ids) - 1:len(ids) - 1] = 1.0  # Position t predicts token t + 1: the answer's tokens and the end.
    rows.append(row)
    weights.append(w)
  if not rows:
    raise InputError(f'no problem fits in data.seq_len={seq_len} tokens with its {fmt} answer')
  return np.stack(rows), np.stack(weights), len(problems) - len(rows)
