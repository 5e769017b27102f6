"""spark-submit entry point for the `augment` stage: spark-submit jobs/augment.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["augment", *sys.argv[1:]]))
