"""`python -m w2v_numpy ...`: see w2v_numpy/README.md."""
import sys

from w2v_numpy.cli import main

if __name__ == '__main__':
  sys.exit(main())
