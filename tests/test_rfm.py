"""model.ssl: rfm, random feature masking (Yao et al. 2021): the views, the loss, and what it trains."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from divspa.config import ModelConfig
from divspa.models.rfm import RandomFeatureMasking, distinct_uniform, field_views, info_nce
from divspa.models.towers import ARCHS, TwoTower
from divspa.stages.train_base import BASE_VERSION, build_bundle
from tests.test_archs import _model


def test_views_are_disjoint_and_cover_every_present_field():
    tokens = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    keep_1, keep_2 = field_views(tokens, 0.5, torch.Generator().manual_seed(0))
    present = torch.cat([torch.ones(4, 1, dtype=torch.bool), tokens > 0], dim=1)
    n = present.sum(1)
    masked_1, masked_2 = present & ~keep_1, present & ~keep_2
    assert not (masked_1 & masked_2).any()  # no field is masked in both views
    assert torch.equal(masked_1 | masked_2, present & (n >= 2).unsqueeze(1))  # each present field in one
    assert masked_1.sum(1).tolist() == [2, 1, 0, 2]  # round(0.5 n), 1 .. n - 1; the id alone stays in both
    assert ((present & keep_1).sum(1) >= 1).all() and ((present & keep_2).sum(1) >= 1).all()
    again = field_views(tokens, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], keep_1)  # seeded


@pytest.mark.parametrize("arch", ARCHS)
def test_a_masked_field_is_absent_as_padding_is(arch):
    """A view's vector equals the vector of the same item whose masked tokens are padding; a masked
    id contributes nothing either (its embedding row can be anything)."""
    model = _model(arch)
    items = torch.arange(1, 11)
    toks = model.item_tower.item_tokens[items]
    keep = torch.ones(10, 1 + toks.shape[1], dtype=torch.bool)
    keep[:, 2] = False  # the second token of every item
    keep[::2, 0] = False  # and the id of every other item
    with torch.no_grad():
        got = model.item_vectors(items, keep)
        padded = copy.deepcopy(model)
        padded.item_tower.item_tokens[items, 1] = 0
        changed = padded.item_vectors(items, torch.cat([keep[:, :1], torch.ones_like(keep[:, 1:])], dim=1))
        padded.item_tower.ids.weight[items[::2]] = torch.randn(5, padded.item_tower.ids.weight.shape[1])
        moved = padded.item_vectors(items, torch.cat([keep[:, :1], torch.ones_like(keep[:, 1:])], dim=1))
    assert torch.allclose(got, changed, atol=1e-6)
    assert torch.allclose(moved[::2], changed[::2], atol=1e-6)  # masked ids: their rows do not matter
    assert not torch.allclose(got, model.item_vectors(items), atol=1e-3)  # masking changes the vector


def test_catalogue_draws_are_distinct_and_uniform():
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(40)
    for _ in range(2000):
        items = distinct_uniform(40, 10, g)
        assert len(items) == 10 and len(set(items.tolist())) == 10 and items.min() >= 0 and items.max() < 40
        counts[items] += 1
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500  # each value in 10/40 of the draws
    small = distinct_uniform(5, 5, g)  # 10 draws of 5 values rarely hold all 5: a permutation
    assert sorted(small.tolist()) == [0, 1, 2, 3, 4]


def test_info_nce_by_hand():
    z1 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    z2 = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1], [0.5, 0.9], [0.2, 1.0]]), dim=1)
    tau = 0.2
    expected = 0.0
    for i in range(3):
        logits = [float(z1[i] @ z2[j]) / tau for j in range(3)]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert float(info_nce(z1, z2, tau)) == pytest.approx(expected / 3, rel=1e-6)
    assert float(info_nce(z1, z2, 1.0)) != pytest.approx(expected / 3, rel=1e-3)  # the temperature applies


def test_the_ssl_term_is_the_weighted_info_nce_of_two_views_of_catalogue_items():
    model = _model("youtubednn")
    mcfg = ModelConfig(ssl="rfm", ssl_weight=0.3, ssl_temperature=0.5, ssl_batch=6)
    rfm = RandomFeatureMasking(mcfg, model.num_items, seed=1, device=torch.device("cpu"))
    twin = RandomFeatureMasking(mcfg, model.num_items, seed=1, device=torch.device("cpu"))
    positives = torch.tensor([1, 1, 2])
    loss = rfm.loss(model, positives)
    items = twin.items(positives)
    assert len(set(items.tolist())) == 6 and items.min() >= 1 and items.max() <= 10  # from the catalogue
    keep_1, keep_2 = field_views(model.item_tower.item_tokens[items], 0.5, twin.generator)
    with torch.no_grad():
        hand = 0.3 * info_nce(model.item_vectors(items, keep_1), model.item_vectors(items, keep_2), 0.5)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    clicks = RandomFeatureMasking(ModelConfig(ssl="rfm", ssl_items="clicks"), model.num_items, 1, torch.device("cpu"))
    assert clicks.items(positives).tolist() == [1, 2]


def _train(trained, **model_settings) -> tuple[dict[str, torch.Tensor], object]:
    from divspa.models.trainer import Trainer

    cfg = copy.deepcopy(trained.cfg)
    cfg.train.epochs = 1
    for key, value in model_settings.items():
        setattr(cfg.model, key, value)
    torch.manual_seed(cfg.run.seed)
    bundle = build_bundle(trained, BASE_VERSION, cfg)
    assert bundle.mcfg.ssl == cfg.model.ssl
    report = Trainer(cfg, bundle, trained.warehouse.dataset("train_examples"), trained.run_id).fit(epochs=1)
    return bundle.model.state_dict(), report


def test_rfm_off_and_at_weight_zero_train_the_same_weights_and_on_changes_them(trained):
    """Off is today's trainer: the SSL machinery at weight 0 leaves every weight bit-identical (it
    draws from its own generator, not the negatives'); at weight 0.5 it trains the item tower."""
    off, _ = _train(trained)
    zero, _ = _train(trained, ssl="rfm", ssl_weight=0.0)
    on, report = _train(trained, ssl="rfm", ssl_weight=0.5)
    assert off.keys() == zero.keys() and all(torch.equal(off[k], zero[k]) for k in off)
    changed = [k for k in off if not torch.equal(off[k], on[k])]
    assert "item_tower.ids.weight" in changed and "item_tower.tokens.weight" in changed
    assert all(math.isfinite(v) for v in report.train_loss)


def test_every_arch_builds_with_rfm():
    for arch in ARCHS:
        model = TwoTower(10, 8, 5, _model(arch).item_tower.item_tokens, emb_dim=8, hidden=[16], out_dim=6, arch=arch)
        rfm = RandomFeatureMasking(ModelConfig(ssl="rfm", ssl_batch=8), 10, 0, torch.device("cpu"))
        loss = rfm.loss(model, torch.tensor([1, 2]))
        loss.backward()
        assert math.isfinite(loss.item()) and model.item_tower.tokens.weight.grad is not None, arch


def test_checkpoints_before_rfm_load_and_a_newer_ones_settings_are_refused(tmp_path):
    """A checkpoint written before model.ssl existed loads (without RFM); one naming a model setting
    this divspa lacks is refused with one line, not built without it."""
    import io

    import numpy as np

    from divspa.models.checkpoint import ModelBundle, load_checkpoint, to_bytes
    from divspa.models.encoding import Vocab

    mcfg = ModelConfig(embedding_dim=8, output_dim=6, hidden_dims=[16], ssl="rfm")
    vocab = Vocab(np.arange(1, 11) * 7, [f"u={i}" for i in range(8)], [f"i={i}" for i in range(5)])
    model = TwoTower(10, 8, 5, _model("youtubednn").item_tower.item_tokens, emb_dim=8, hidden=[16], out_dim=6)
    state = torch.load(io.BytesIO(to_bytes(ModelBundle(model, vocab, mcfg, torch.ones(11), {}))), weights_only=True)
    for key in [k for k in state["model_config"] if k.startswith("ssl")]:
        del state["model_config"][key]
    old = io.BytesIO()
    torch.save(state, old)
    loaded = load_checkpoint(old.getvalue())
    assert loaded.mcfg.ssl == "none" and torch.equal(loaded.model.item_vectors(), model.item_vectors())
    state["model_config"]["hashed_fields"] = 57
    newer = io.BytesIO()
    torch.save(state, newer)
    with pytest.raises(ValueError, match=r"written by a newer divspa: its model settings hashed_fields") as err:
        load_checkpoint(newer.getvalue())
    assert "\n" not in str(err.value)
