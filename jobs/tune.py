"""spark-submit entry point for the `tune` stage: spark-submit jobs/tune.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
