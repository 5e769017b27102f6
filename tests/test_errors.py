"""One exception hierarchy: every deliberate error is a DivspaError with the CLI's exit code."""

from __future__ import annotations

import importlib

import pytest

from divspa import errors
from divspa.cli import main

HOMES = {"ConfigError": "divspa.config", "StorageError": "divspa.storage", "SchemaError": "divspa.schemas",
         "DeltaWriteError": "divspa.delta", "ReadOnlyError": "divspa.sql", "SourceError": "divspa.ingest.sources",
         "SplitError": "divspa.ingest.split", "TrainingError": "divspa.models.distributed",
         "StageError": "divspa.runtime"}


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_error_is_one_class_importable_where_it_always_was(name):
    cls = getattr(errors, name)
    assert getattr(importlib.import_module(HOMES[name]), name) is cls
    assert issubclass(cls, errors.DivspaError)
    assert issubclass(cls, (ValueError, RuntimeError))  # callers catching the builtin base still do
    assert cls.exit_code == (2 if name == "ConfigError" else 1)


def test_a_failing_stage_exits_1_with_one_line(spark, tmp_path, capsys):
    argv = ["ingest", "--conf", "conf/ml100k.yaml", "--set", f"run.output_dir={tmp_path}",
            "--set", f"source.path={tmp_path / 'no-such-dir'}"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()  # the run's log lines, then the error's one line
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("divspa: stage ingest failed") and "no-such-dir" in err.splitlines()[-1]
    assert main(["ingest", "--conf", "conf/ml100k.yaml", "--set", "spark.shuffle_partitions=0"]) == 2
    assert "config error" in capsys.readouterr().err
