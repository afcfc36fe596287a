"""`python -m difflab ...`: the same as the `difflab` command."""
import sys

from difflab.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
