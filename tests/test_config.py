from __future__ import annotations

import pytest
import yaml

from divspa.config import dump_config, load_config
from divspa.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_repository_configs_load():
    for name in ("default", "ml100k"):
        cfg = load_config(f"conf/{name}.yaml")
        assert cfg.split.test_fraction == 0.1
    assert load_config().source.format == "synthetic"


# A bad setting, given in a YAML file (text) or as --set overrides (list): the one line it fails with.
REFUSED = [
    ("split:\n  test_fractoin: 0.2\n", r"c\.yaml: unknown key split\.test_fractoin"),
    ("trian: {}\n", "unknown key trian"),
    ("synthetic:\n  num_users: many\n", r"synthetic\.num_users = 'many' must be an integer"),
    ("spark:\n  ui: 'yes'\n", r"spark\.ui = 'yes' must be true or false"),
    ("split:\n  test_fraction: 1.5\n", r"split\.test_fraction = 1\.5 is out of range: must be < 1"),
    ("ingest:\n  max_bad_fraction: -0.1\n", r"ingest\.max_bad_fraction = -0\.1 is out of range"),
    ("source:\n  format: avro\n", r"source\.format = 'avro' is not one of"),
    (["split.mode=weekly"], r"split\.mode = 'weekly' is not one of"),
    (["split.mode=per_user", "split.cut_time=2026-01-01T00:00:00"],
     r"split\.cut_time sets a global cut; .* split\.mode = per_user"),
    (["spark.conf.spark.d=[1]"], "must be a string"),
    (["split.cut=1"], "unknown key split.cut"),
    (["split.test_fraction"], "expected key.sub=value"),
    ("source:\n  filters: [{column: rating, op: '=>', value: 4}]\n", r"source\.filters\[0\]\.op = '=>' is not one of"),
    ("source:\n  filters: [{column: rating, op: '>='}]\n", r"missing required key source\.filters\[0\]\.value"),
    (["run.run_id=a/b"], "run.run_id"),
    ("split: [\n", r"c\.yaml: not valid YAML at line 2, column 1: "),
    (["publish.k=30"], r"publish\.k = 30 is not one of eval\.ks"),
    (["publish.augmented_rows_range=[2, 1]"], r"augmented_rows_range = \[2\.0, 1\.0\]"),
]


@pytest.mark.parametrize(("bad", "error"), REFUSED)
def test_a_bad_setting_fails_naming_the_key(tmp_path, bad, error):
    with pytest.raises(ConfigError, match=error) as refused:
        load_config(None, bad) if isinstance(bad, list) else load_config(write(tmp_path, bad))
    assert "\n" not in str(refused.value)


def test_overrides_are_typed():
    cfg = load_config(None, ["split.test_fraction=0.2", "spark.conf.spark.foo=bar", "run.run_id=20261122"])
    assert cfg.split.test_fraction == 0.2
    assert cfg.spark.conf == {"spark.foo": "bar"}
    assert cfg.run_id == "20261122"
    # Spark settings are text to Spark; YAML scalars are written as Spark spells them
    cfg = load_config(None, ["spark.conf.spark.a=true", "spark.conf.spark.b=4", "spark.conf.spark.c=0.5"])
    assert cfg.spark.conf == {"spark.a": "true", "spark.b": "4", "spark.c": "0.5"}
    assert load_config(None, ["publish.max_divspa_drop=null"]).publish.max_divspa_drop is None


def test_nested_lists_of_sections(tmp_path):
    cfg = load_config(write(tmp_path, "source:\n  filters: [{column: rating, op: '>=', value: 4}]\n"))
    assert cfg.source.filters[0].column == "rating" and cfg.source.filters[0].value == 4
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_dump_round_trips():
    cfg = load_config("conf/default.yaml")
    again = yaml.safe_load(dump_config(cfg))
    assert again["run"]["run_id"] == "demo"
    assert again["synthetic"]["num_users"] == cfg.synthetic.num_users


def test_default_run_id_is_read_once(monkeypatch):
    """A run crossing midnight UTC keeps the run id it started with."""
    import datetime as real_dt

    import divspa.config as config_module

    days = iter([real_dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=real_dt.UTC),
                 real_dt.datetime(2026, 11, 23, 0, 0, 1, tzinfo=real_dt.UTC)])

    class Clock(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return next(days)

    monkeypatch.setattr(config_module.dt, "datetime", Clock)
    cfg = load_config(None)
    assert cfg.run_id == "2026-11-22" and cfg.run_id == "2026-11-22"  # the clock was read once
    assert cfg.run_dir.endswith("/runs/2026-11-22") and cfg.model_dir.endswith("/models/2026-11-22")


def test_environment_overrides_sit_between_yaml_and_set(tmp_path, monkeypatch):
    p = write(tmp_path, "run:\n  output_dir: from-yaml\n  keep_runs: 3\n")
    monkeypatch.setenv("DIVSPA__RUN__OUTPUT_DIR", "from-env")
    monkeypatch.setenv("DIVSPA__SPARK__CONF__spark.sql.shuffle.partitions", "64")
    monkeypatch.setenv("DIVSPA_JARS", "/not/a/config/key")  # one underscore: not an override
    cfg = load_config(p)
    assert cfg.run.output_dir == "from-env" and cfg.run.keep_runs == 3
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "64"}  # a map key keeps its spelling
    assert load_config(p, ["run.output_dir=from-set"]).run.output_dir == "from-set"
    monkeypatch.setenv("DIVSPA__RUN__KEEP_RUNS", "zero")
    with pytest.raises(ConfigError, match=r"run\.keep_runs = 'zero' has the wrong type"):
        load_config(p)


def test_environment_references_in_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("S3_SECRET", "s3cr3t")
    p = write(tmp_path, "spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: ${S3_SECRET}\n"
                        "run:\n  output_dir: ${OUT_ROOT:-/data}/divspa\n")
    cfg = load_config(p)
    assert cfg.spark.conf["spark.hadoop.fs.s3a.secret.key"] == "s3cr3t" and cfg.run.output_dir == "/data/divspa"
    assert "s3cr3t" not in dump_config(cfg)  # the saved config masks it
    monkeypatch.delenv("S3_SECRET")
    with pytest.raises(ConfigError, match=r"spark\.conf\.spark\.hadoop\.fs\.s3a\.secret\.key refers to \$\{S3_SECRET\}"):
        load_config(p)


def test_a_retired_key_fails_with_why_and_what_instead(tmp_path):
    """A YAML written for an option issue 41 retired must not silently run without it."""
    with pytest.raises(ConfigError, match=r"augment\.tail_quota was retired \(issue 41.*popularity_debias"):
        load_config(write(tmp_path, "augment:\n  tail_quota: 1\n"))
    with pytest.raises(ConfigError, match=r"divspa\.beta_i2i was retired.*use divspa\.beta"):
        load_config(None, ["divspa.beta_i2i=0.3"])
    with pytest.raises(ConfigError, match=r"augment\.exclude was retired") as err:
        load_config(write(tmp_path, "augment:\n  exclude: fit\n"))  # even at the old default
    assert "\n" not in str(err.value)
    assert load_config(None, ["divspa.augmented_item_grad=0.5"]).divspa.augmented_item_grad == 0.5  # kept


def test_options_page_is_the_configs_own_docs():
    """docs/OPTIONS.md is generated from divspa/config.py's comments: a changed option must regenerate it."""
    from divspa.options import _headings, _link, options_markdown
    from tests.conftest import REPO

    assert (REPO / "docs" / "OPTIONS.md").read_text() == options_markdown(), \
        "docs/OPTIONS.md is stale: python -m divspa.options > docs/OPTIONS.md"
    page = options_markdown()
    assert "| `augment.popularity_debias` | `0.0` | ≥ 0 | beyond |" in page
    assert "| `augment.m` | `3` | ≥ 1 | paper: m = 3 |" in page
    assert "(benchmarks/history.md#" in page  # section names became links
    with pytest.raises(ValueError, match="No such section"):
        _link("No such section", _headings())
