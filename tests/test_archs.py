"""model.arch: FM, DeepFM and AutoInt two-tower bases beside YoutubeDNN, and DivSPA on each."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from divspa.config import load_config
from divspa.errors import ConfigError
from divspa.models.checkpoint import load_checkpoint
from divspa.models.towers import ARCHS, TwoTower, UserInputs
from divspa.pipeline import BY_NAME, STAGES, run_pipeline
from divspa.runtime import RunContext
from divspa.stages.train_base import BASE_VERSION, checkpoint_path
from divspa.stages.train_divspa import final_version
from tests.conftest import REPO, assert_export_matches, rerun

EMB, OUT = 8, 6
SIZES = {"youtubednn": OUT, "fm": EMB + 2, "deepfm": EMB + 2 + OUT, "autoint": OUT}


def _model(arch: str) -> TwoTower:
    torch.manual_seed(0)
    item_tokens = torch.randint(0, 6, (11, 3))
    item_tokens[0] = 0
    return TwoTower(10, 8, 5, item_tokens, emb_dim=EMB, hidden=[16], out_dim=OUT, arch=arch)


USERS = UserInputs(torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0]]), torch.tensor([[3, 4, 0], [0, 0, 0], [0, 0, 0]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_towers_give_unit_vectors_of_the_documented_size_and_ignore_padding(arch):
    model = _model(arch)
    with torch.no_grad():
        u, v = model.user_vectors(USERS), model.item_vectors()
        padded = UserInputs(torch.nn.functional.pad(USERS.tokens, (0, 4)), torch.nn.functional.pad(USERS.history, (2, 0)))
        u_padded = model.user_vectors(padded)
    assert u.shape == (3, SIZES[arch]) and v.shape == (10, SIZES[arch])
    assert torch.allclose(u.norm(dim=-1), torch.ones(3)) and torch.allclose(v.norm(dim=-1), torch.ones(10))
    assert torch.isfinite(u).all()  # the third user has neither features nor history
    assert torch.allclose(u, u_padded, atol=1e-6)
    assert not torch.allclose(u[0], u[1])


@pytest.mark.parametrize("arch", ["fm", "deepfm"])
def test_fm_towers_split_fms_score_exactly(arch):
    """u.v before normalisation is FM's score over the union of both sides' fields (Rendle 2010);
    DeepFM's is that plus the dot product of its two DNN parts (Guo et al. 2017)."""
    model = _model(arch)
    items = torch.arange(1, 11)
    with torch.no_grad():
        ue, um, ul = model.user_tower.fields(USERS)
        ie, im, il = model.item_tower.fields(items)
        u, v = model.user_tower.head(ue, um, ul), model.item_tower.head(ie, im, il)
        raw, deep = u @ v.T, u[:, EMB + 2:] @ v[:, EMB + 2:].T  # deep: (3, 10) zeros for fm
        for b in range(3):
            for j in range(10):
                e = torch.cat([ue[b][um[b]], ie[j][im[j]]])
                fm = 0.5 * (e.sum(0).pow(2).sum() - e.pow(2).sum()) + ul[b] + il[j]
                assert float(raw[b, j]) == pytest.approx(float(fm + deep[b, j]), rel=1e-5, abs=1e-6)


def test_every_arch_trains_the_same_objective():
    """The one sampled-softmax objective reaches every parameter of each arch and lowers its loss:
    the trainer needs no branch per arch, and no part of an arch is left untrained."""
    from divspa.models.loss import sampled_softmax_loss

    for arch in ARCHS:
        model = _model(arch)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        pos, neg = torch.tensor([1, 2, 3]), torch.arange(1, 11)
        losses = []
        for _ in range(5):
            loss = sampled_softmax_loss(model.user_vectors(USERS), model.item_vectors(pos), model.item_vectors(neg),
                                        pos, neg, model.omega).mean()
            opt.zero_grad()
            loss.backward()
            untrained = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not untrained, (arch, untrained)
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], arch


def test_autoint_heads_must_divide_the_embedding(tmp_path):
    with pytest.raises(ConfigError, match="attention_heads"):
        load_config(REPO / "conf" / "default.yaml", ["model.arch=autoint", "model.embedding_dim=30",
                                                      "model.attention_heads=4"])


@pytest.mark.parametrize(("arch", "ssl", "ufn"), [("fm", "none", False), ("deepfm", "none", True),
                                                 ("autoint", "rfm", False)])
def test_divspa_pipeline_on_each_arch(spark, trained, tmp_path, arch, ssl, ufn):
    """Teacher, export, retrieve, augment, student, the student's export and evaluation with `arch`
    (and model.ssl, and UFNRec's reversal started after epoch 2 of 4), on a copy of the suite's
    small run (ingest, split and prepare do not depend on it)."""
    out = tmp_path / "out"
    shutil.copytree(trained.cfg.run.output_dir, out)
    cfg = copy.deepcopy(trained.cfg)
    cfg.run.output_dir, cfg.model.arch, cfg.model.ssl, cfg.train.epochs = str(out), arch, ssl, 1
    if ufn:
        cfg.train.epochs, cfg.train.false_negatives, cfg.train.ufn_min_epochs, cfg.train.ufn_level_off = 4, True, 2, 1e9
        cfg.train.patience, cfg.train.ufn_reverse = 4, 0
    ctx = RunContext.start(cfg, "test", spark=spark, force=True)
    run_pipeline(ctx, [s.name for s in STAGES[STAGES.index(BY_NAME["train_base"]):]])
    final = final_version(ctx)
    for version in (BASE_VERSION, final):
        mcfg = load_checkpoint(checkpoint_path(ctx, version)).mcfg
        assert (mcfg.arch, mcfg.ssl) == (arch, ssl)  # the student trains as its teacher did
        meta = load_checkpoint(checkpoint_path(ctx, version)).meta
        assert (meta.get("false_negatives") or {}).get("reversal_after") == (2 if ufn else None)
        assert_export_matches(ctx, version)  # Spark's vectors are the trained model's, teacher and student
    page = (Path(ctx.cfg.run_dir) / "report.html").read_text()
    assert f"base model {arch}{' with RFM' if ssl == 'rfm' else ' with UFNRec' if ufn else ';'}" in page  # what trained
    got = {(r["model"], r["metric"]) for r in ctx.read("metrics").where("stage = 'evaluate'").collect()}
    assert {(BASE_VERSION, "hr"), (final, "hr"), ("popularity", "hr")} <= got

    def figures() -> set[tuple]:
        return {(r["metric"], r["value"]) for r in ctx.read("metrics").where(
            "stage = 'train_base' and metric in ('val_hr', 'train_loss')").collect()}

    first = figures()
    rerun(ctx, "train_base")
    assert figures() == first and len(first) == 2  # reproducible training
