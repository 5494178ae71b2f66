#!/usr/bin/env python
"""Entry point of the Weight Weaving benchmark harness; see ``python run_bench.py --help``."""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
