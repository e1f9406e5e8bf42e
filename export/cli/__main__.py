"""`python -m export.cli ARGS`: the same as the `resnet-deploy` console script."""
import sys

from export.cli.app import main

sys.exit(main())
