"""spark-submit entry point for the `export_student` stage: spark-submit jobs/export_student.py --conf conf/<name>.yaml"""

import sys

from divspa.cli import main

if __name__ == "__main__":
    sys.exit(main(["export_student", *sys.argv[1:]]))
