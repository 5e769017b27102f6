"""spark-submit entry point for the `train_divspa` stage: spark-submit jobs/train_divspa.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_divspa", *sys.argv[1:]]))
