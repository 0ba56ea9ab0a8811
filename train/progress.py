"""Progress lines (step, loss, accuracy, steps/s, ETA) and quieter third-party logs."""
import logging as py_logging
import math
import sys
import time

import jax


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else (f'{m}m{s:02d}s' if m else f'{s}s')


class Progress:
  """A progress bar on a terminal, one plain line per update elsewhere (logs, CI)."""

  def __init__(self, total_steps: int, start_step: int, prefix: str = '', stream=None):
    self.total = total_steps
    self.prefix = prefix
    self.stream = stream or sys.stdout
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self.rate = float('nan')

  def update(self, step: int, metrics: dict[str, float]) -> str:
    """Prints the line for `step` (steps done) and returns it."""
    now = time.perf_counter()
    if step > self._last_step:
      self.rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total - step) / self.rate if self.rate > 0 else float('nan')
    width = 20
    filled = int(width * step / max(self.total, 1))
    bar = '#' * filled + '.' * (width - filled)
    fields = ' '.join(f'{k} {v:.4g}' for k, v in metrics.items())
    line = (f'{self.prefix}[{bar}] step {step}/{self.total} {fields} '
            f'{self.rate:.2f} steps/s ETA {format_duration(eta)}')
    if jax.process_index() == 0:
      if self.tty:
        self.stream.write('\r' + line + '\x1b[K')
        if step >= self.total:
          self.stream.write('\n')
      else:
        self.stream.write(line + '\n')
      self.stream.flush()
    return line

  def restart_clock(self, step: int) -> None:
    """Excludes time spent elsewhere (evals, checkpoints) from the next rate."""
    self._last_step, self._last_time = step, time.perf_counter()

  def newline(self) -> None:
    """Ends a bar line before other output (evaluations) is printed."""
    if self.tty and jax.process_index() == 0:
      self.stream.write('\n')
      self.stream.flush()


class _OwnInfoOnly(py_logging.Filter):
  """Keeps warnings from everyone but INFO lines only from this project (orbax and jax are chatty)."""

  _THIRD_PARTY = ('orbax', 'jax', 'etils', 'flax', 'absl', 'datasets', 'tensorstore')

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING:
      return True
    path = record.pathname.replace('\\', '/')
    return not any(f'/{name}/' in path for name in self._THIRD_PARTY)


def quiet_third_party_info() -> None:
  """Drops third-party INFO lines from the absl log handler (run with --verbosity=1 to see all)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  if logging.get_verbosity() > logging.INFO:
    return
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())
