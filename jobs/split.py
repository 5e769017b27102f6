"""spark-submit entry point for the `split` stage: spark-submit jobs/split.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["split", *sys.argv[1:]]))
