"""spark-submit entry point for the `evaluate` stage: spark-submit jobs/evaluate.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
