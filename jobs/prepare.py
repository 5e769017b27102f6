"""spark-submit entry point for the `prepare` stage: spark-submit jobs/prepare.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
