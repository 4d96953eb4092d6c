"""``python -m stability.sweep GRID ...`` is ``stability sweep GRID ...`` (same dispatcher and exit codes)."""

import sys

from stability.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
