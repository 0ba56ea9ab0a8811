"""Downloads the text8 corpus (first 10^8 bytes of cleaned English Wikipedia, 17M words)."""
import os
import shutil
import tempfile
import urllib.request
import zipfile

TEXT8_URL = 'http://mattmahoney.net/dc/text8.zip'


def fetch(url: str, dest: str) -> None:
  """Copies `url` (http(s):// or file://) to the file `dest`."""
  with urllib.request.urlopen(url, timeout=60) as response, open(dest, 'wb') as out:
    shutil.copyfileobj(response, out, length=1 << 20)


def download_text8(out_dir: str | os.PathLike, url: str = TEXT8_URL, force: bool = False) -> str:
  """Downloads and unzips text8 into out_dir; returns the path of the `text8` file.

  An existing file is kept unless `force`. The zip must hold a member named `text8`.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  target = os.path.join(out_dir, 'text8')
  if os.path.isfile(target) and not force:
    return target
  with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
    archive = os.path.join(tmp, 'text8.zip')
    fetch(url, archive)
    try:
      with zipfile.ZipFile(archive) as zf:
        if 'text8' not in zf.namelist():
          raise ValueError(f'{url}: archive has no member `text8` (has {zf.namelist()[:5]})')
        zf.extract('text8', tmp)
    except zipfile.BadZipFile:
      raise ValueError(f'{url}: downloaded file is not a zip archive') from None
    os.replace(os.path.join(tmp, 'text8'), target)
  return target
