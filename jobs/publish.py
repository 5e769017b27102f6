"""spark-submit entry point for the `publish` stage: spark-submit jobs/publish.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
