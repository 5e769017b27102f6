"""spark-submit entry point for the `train_base` stage: spark-submit jobs/train_base.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_base", *sys.argv[1:]]))
