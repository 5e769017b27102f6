"""spark-submit entry point for the `export` stage: spark-submit jobs/export_embeddings.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
