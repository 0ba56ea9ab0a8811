r"""Our GSM8K harness against lm-evaluation-harness on the same model and the same problems (issue: a real
pretrained small model). Offline: the model is our SmolLM2 load exported as an HF directory (--mode=export of
configs/lm.py:smollm2), the problems the shared GSM8K files, read by lm-evaluation-harness as local JSON.

  pip install lm_eval torch==2.13.0 transformers        # the bench extra (a venv of its own is safest)
  python -m data.fetch smollm2
  python bench/gsm8k_vs_lm_eval.py --limit=50 --format=gsm8k_cot

Prints, for the first `limit` test problems, strict-match and flexible-extract accuracy of both harnesses with
95% Wilson intervals, and how many problems the two score differently. gsm8k_cot uses the 8 fixed exemplars in
both; with --format=gsm8k each harness draws its 5 exemplars its own way, so only the accuracies compare.
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from data import paths  # pylint: disable=g-import-not-at-top,wrong-import-position
from train.tasks.lm.gsm8k import wilson  # pylint: disable=g-import-not-at-top,wrong-import-position

_LIMIT = flags.DEFINE_integer('limit', 50, 'The first this many test problems.')
_FORMAT = flags.DEFINE_enum('format', 'gsm8k_cot', ['gsm8k_cot', 'gsm8k'], 'The prompt format (both harnesses).')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Where the export and the outputs go ("" = a temporary folder).')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Prompts generated at once (both harnesses).')
_LM_EVAL = flags.DEFINE_string('lm_eval', 'lm_eval', 'The lm-evaluation-harness command.')

_TASK_YAML = """include: {base}
task: {name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
"""


def _run(cmd: list[str]) -> str:
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.exit(f'{" ".join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}')
  return proc.stdout + proc.stderr


def main(argv):
  del argv
  work = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix='gsm8k_vs_lm_eval_'))
  shared = paths.shared_data_dir() / 'gsm8k'
  ours_cmd = [sys.executable, 'launch.py', '--config=configs/lm.py:smollm2', f'--workdir={work / "ours"}']
  _run(ours_cmd + ['--mode=export'])
  start = time.time()
  _run(ours_cmd + ['--mode=eval', '--config.eval.file_evaluator=gsm8k', f'--config.data.eval_file={shared}/test.jsonl',
                   f'--config.evals.gsm8k.format={_FORMAT.value}', f'--config.evals.gsm8k.limit={_LIMIT.value}',
                   f'--config.evals.gsm8k.batch_size={_BATCH.value}'])
  ours_seconds = time.time() - start
  ours = [json.loads(line) for line in (work / 'ours' / f'gsm8k_{_FORMAT.value}.jsonl').read_text().splitlines()]

  import lm_eval  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  base = pathlib.Path(lm_eval.__file__).parent / 'tasks' / 'gsm8k' / ('gsm8k-cot.yaml' if _FORMAT.value == 'gsm8k_cot'
                                                                        else 'gsm8k.yaml')
  tasks = work / 'tasks'
  tasks.mkdir(parents=True, exist_ok=True)
  name = f'{_FORMAT.value}_local'
  (tasks / f'{name}.yaml').write_text(_TASK_YAML.format(base=base, name=name, train=shared / 'train.jsonl',
                                                        test=shared / 'test.jsonl'))
  start = time.time()
  _run([_LM_EVAL.value, '--model', 'hf', '--model_args', f'pretrained={work / "ours" / "hf"},dtype=float32',
        '--tasks', name, '--include_path', str(tasks), '--batch_size', str(_BATCH.value), '--limit', str(_LIMIT.value),
        '--log_samples', '--output_path', str(work / 'lm_eval'), '--device', 'cpu'])
  theirs_seconds = time.time() - start
  (results_file,) = sorted((work / 'lm_eval').rglob('results_*.json'))[-1:]
  results = json.loads(results_file.read_text())['results'][name]
  (samples_file,) = sorted((work / 'lm_eval').rglob(f'samples_{name}_*.jsonl'))[-1:]
  samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
  samples = sorted((x for x in samples if x.get('filter', 'flexible-extract') == 'flexible-extract'),
                   key=lambda x: x['doc_id'])  # One line per problem and filter: the flexible one's.
  n = len(ours)
  print(f'GSM8K test, first {n} problems, {_FORMAT.value} format, SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)')
  print('| harness | strict match (95%) | flexible extract (95%) | seconds |\n|---|---|---|---|')
  for label, strict, flexible, seconds in (
      ('ours', sum(r['correct_strict'] for r in ours), sum(r['correct_flexible'] for r in ours), ours_seconds),
      ('lm-evaluation-harness', round(results['exact_match,strict-match'] * n),
       round(results['exact_match,flexible-extract'] * n), theirs_seconds)):
    cells = [f'{k / n:.4f} ({wilson(k, n)[0]:.4f}-{wilson(k, n)[1]:.4f})' for k in (strict, flexible)]
    print(f'| {label} | {cells[0]} | {cells[1]} | {seconds:.0f} |')
  differ = sum(r['correct_flexible'] != bool(x.get('exact_match', 0)) for r, x in zip(ours, samples))
  same_text = sum(r['completion'].strip()[:80] == str(x['resps'][0][0]).strip()[:80] for r, x in zip(ours, samples))
  print(f'problems scored differently (flexible): {differ}; completions with the same first 80 characters: '
        f'{same_text}/{n}')


if __name__ == '__main__':
  app.run(main)
