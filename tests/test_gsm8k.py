"""GSM8K as the community scores it (data/gsm8k.py): reading and its errors, the prompt formats, answer extraction
(strict and flexible, lm-evaluation-harness's patterns) and normalisation, the 95% interval."""
import json

import numpy as np
import pytest

from data import gsm8k
from data.errors import InputError
from train.tasks.lm.gsm8k import wilson

PROBLEM = gsm8k.Problem('Tom has 7 marbles and gives 4 away. How many are left?',
                        'He has 7 - 4 = <<7-4=3>>3 left.\nSo $3,000 is not it.\n#### 3', 'x:1')


def test_target_solution_and_equations():
  assert PROBLEM.target == '3'
  assert PROBLEM.solution.endswith('So $3,000 is not it.')
  assert PROBLEM.equations == ['7-4=3']


@pytest.mark.parametrize('completion, fmt, strict, flexible', [
    (' He has 3 left.\n#### 3\n\nQuestion', 'gsm8k', '3', '3'),
    (' It costs $1,250.', 'gsm8k', None, '$1,250.'),
    (' 5 + 4 = 9. The answer is 9.', 'gsm8k_cot', '9', '9.'),
    (' The answer is -12.5. Then 7', 'gsm8k_cot', '-12.5.', '7'),  # Greedy, as lm-eval's pattern.
    ('Step one: 2 * 3 = 6\n#### 6', 'chat', '6', '6'),
    ('no number here', 'chat', None, None),
])
def test_extraction_strict_and_flexible(completion, fmt, strict, flexible):
  assert gsm8k.extract(completion, fmt) == (strict, flexible)


def test_numbers_compare_without_commas_dollars_and_a_final_dot():
  assert gsm8k.is_correct('$1,250.', '1250')
  assert gsm8k.is_correct('70,000', '70000')
  assert not gsm8k.is_correct('12.5', '125')
  assert not gsm8k.is_correct(None, '3')


def test_prompt_formats():
  train = [gsm8k.Problem(f'q{i}?', f'a{i}\n#### {i}', f't:{i}') for i in range(20)]
  shots = gsm8k.few_shot(train, 5, index=3, seed=1234)
  assert shots == gsm8k.few_shot(train, 5, index=3, seed=1234) != gsm8k.few_shot(train, 5, index=4, seed=1234)
  text = gsm8k.prompt(PROBLEM, 'gsm8k', shots)
  assert text.count('Question: ') == 6 and text.endswith(f'Question: {PROBLEM.question}\nAnswer:')
  assert '\n#### ' in text.split('Question: ')[1]  # Exemplars carry their whole solution.
  cot = gsm8k.prompt(PROBLEM, 'gsm8k_cot')
  assert cot.count('Q: ') == 9 and cot.count('The answer is') == 8 and cot.endswith('\nA:')
  assert gsm8k.prompt(PROBLEM, 'chat').endswith(gsm8k.CHAT_INSTRUCTION)


@pytest.mark.parametrize('line, says', [
    ('{"answer": "#### 3"}', "x.jsonl:2: no 'question' text field"),
    ('{"question": "q", "answer": "3"}', "x.jsonl:2: the answer has no '#### ' line"),
    ('{"question": "q", ', 'x.jsonl:2: not JSON'),
])
def test_bad_lines_name_file_and_line(tmp_path, line, says):
  path = tmp_path / 'x.jsonl'
  path.write_text(json.dumps({'question': 'q', 'answer': 'a\n#### 1'}) + '\n' + line + '\n')
  with pytest.raises(InputError, match=says):
    gsm8k.read(path)


def test_wilson_interval():
  assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
  lo, hi = wilson(0, 16)
  assert lo == 0.0 and hi == pytest.approx(0.1936, abs=1e-4)


def test_answer_formats_and_fine_tuning_rows():
  from data import bpe  # pylint: disable=g-import-not-at-top
  from tests.test_pretrained import FIXTURE  # pylint: disable=g-import-not-at-top
  assert gsm8k.answer_text(PROBLEM, 'solution') == ' He has 7 - 4 = <<7-4=3>>3 left.\nSo $3,000 is not it.\n#### 3'
  assert gsm8k.answer_text(PROBLEM, 'equations') == ' <<7-4=3>> #### 3'
  assert gsm8k.answer_text(PROBLEM, 'answer') == ' #### 3'
  tokenizer = bpe.load_file(FIXTURE)
  long = gsm8k.Problem('word ' * 300, 'x\n#### 1', 'x:2')
  tokens, weights, dropped = gsm8k.sft_rows([PROBLEM, long], tokenizer, 'equations', 128, end_id=0, pad_id=2)
  assert tokens.shape == (1, 129) and weights.shape == (1, 128) and dropped == 1
  learned = tokens[0, 1:][weights[0] > 0].tolist()  # The tokens the loss is on: the answer, then the end.
  assert learned[-1] == 0 and tokenizer.decode(learned[:-1]) == ' <<7-4=3>> #### 3'
  assert tokenizer.decode(tokens[0, :int(np.argmax(weights[0] > 0)) + 1].tolist()).endswith('\nAnswer:')


def test_fine_tuning_run_through_launch(tmp_path):
  from tests.conftest import launch, ok  # pylint: disable=g-import-not-at-top
  from tests.test_pretrained import FIXTURE, GSM8K_LINES, TINY_ARCHITECTURE  # pylint: disable=g-import-not-at-top
  fields = dict({f'model.{k}': v for k, v in TINY_ARCHITECTURE.items()}, **{
      'train.init_from': FIXTURE, 'data.tokenizer': FIXTURE, 'data.train_file': GSM8K_LINES, 'data.seq_len': 200,
      'flops_budget': 0, 'train.steps': 4, 'train.batch_size': 2, 'evals.test.problems_file': GSM8K_LINES,
      'evals.test.max_new_tokens': 8, 'evals.test.batch_size': 2, 'sweep.grid': 'data.answer=equations'})
  out = ok(launch('--config=configs/gsm8k.py', f'--workdir={tmp_path}', *[f'--config.{k}={v}' for k, v in fields.items()]))
  assert 'GSM8K fine-tuning: 3 problems with equations answers' in out
  run = tmp_path / 'runs' / 'equations'
  record = json.loads((run / 'result.json').read_text()) if (run / 'result.json').is_file() else json.loads(
      (run / 'results.json').read_text())
  assert record['answer'] == 'equations' and record['lora_rank'] == 8 and record['problems'] == 3
  assert len((run / 'gsm8k_gsm8k.jsonl').read_text().splitlines()) == 3
  assert '| equations, LoRA r8 |' in (tmp_path / 'results.md').read_text()
  assert (tmp_path / 'accuracy_vs_tokens.png').is_file()
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from tests.conftest import REPO_ROOT, launch_env  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/gsm8k.py', f'--workdir={tmp_path}',
                         *[f'--config.{k}={v}' for k, v in fields.items()], '--mode=interactive',
                         '--config.generate.max_new_tokens=8'],
                        input='Tom has 7 marbles and gives 4 away. How many are left?\n\nquit\n', cwd=REPO_ROOT,
                        text=True, capture_output=True, timeout=300, env=launch_env())
  out = ok(proc)
  assert 'equations, LoRA r8, latest checkpoint (step 4). Type a word problem' in out
  assert proc.stdout.count('\nanswer: ') == 1 and proc.stdout.count('> ') == 3
  from configs import gsm8k as gsm8k_config  # pylint: disable=g-import-not-at-top
  from train.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from train.tasks.gsm8k import GSM8KTask  # pylint: disable=g-import-not-at-top
  config = gsm8k_config.get_config()
  config.data.answer = 'sums'
  with pytest.raises(ConfigError, match="data.answer='sums'; choose from"):
    GSM8KTask().check(config)
