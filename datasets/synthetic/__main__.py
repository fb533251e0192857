"""python -m datasets.synthetic: the command line of cli.py."""
import sys

from datasets.synthetic.cli import main

sys.exit(main())
