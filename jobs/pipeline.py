"""spark-submit entry point for the whole pipeline: spark-submit jobs/pipeline.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
