"""`python -m export.cli ARGS`: the same as the `resnet-deploy` console script."""
import sys

from export.cli.app import main

if __name__ == "__main__":  # not again in a process forked by the export pool's fork server
    sys.exit(main())
