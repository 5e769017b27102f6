"""spark-submit entry point for the `retrieve` stage: spark-submit jobs/retrieve.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["retrieve", *sys.argv[1:]]))
