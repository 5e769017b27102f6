"""spark-submit entry point for the `ingest` stage: spark-submit jobs/ingest.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
