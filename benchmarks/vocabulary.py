"""A training step's cost against the item vocabulary, dense vs sparse embedding gradients (issue 18).

    .venv/bin/python benchmarks/vocabulary.py                              # YoutubeDNN, 10k..420k items
    .venv/bin/python benchmarks/vocabulary.py --arch deepfm --items 10000,420000 --threads 2
    .venv/bin/python benchmarks/vocabulary.py --ssl rfm --items 105000,420000   # the same steps with RFM's loss
    .venv/bin/python benchmarks/vocabulary.py --values 41200000       # a vocabulary's bytes, stored two ways

One step is what `Trainer.batch_loss` does per batch at the paper's settings (batch 256, 200
shared negatives, 20 history items, embedding 32): towers forward, sampled softmax, backward, the
optimiser from `divspa.models.optimizers.make_optimizer`. Random indices stand in for a batch (the
cost does not depend on which items). With dense gradients every step touches every row of
every table; with `train.sparse_embeddings` (CatchUpAdam) only the rows in the batch, which the
lookups of the next steps bring up to date. The per-epoch flush of the rows a run has not looked
up since is not in the figures (one pass over the tables). The
sparse path is forced at every size (`train.sparse_min_rows=0`); by default tables under 32,768
rows stay dense, where dense Adam is the cheaper. Prints ms per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import load_config  # noqa: E402
from divspa.models.layers import UserInputs  # noqa: E402
from divspa.models.loss import sampled_softmax_loss  # noqa: E402
from divspa.models.optimizers import make_optimizer  # noqa: E402
from divspa.models.rfm import RandomFeatureMasking  # noqa: E402
from divspa.models.towers import TwoTower  # noqa: E402


def step_ms(items: int, sparse: bool, arch: str, steps: int, seed: int = 0, ssl: str = "none") -> float:
    cfg = load_config(None, [f"model.arch={arch}", f"train.sparse_embeddings={str(sparse).lower()}",
                             "train.sparse_min_rows=0", f"model.ssl={ssl}"])
    m, t = cfg.model, cfg.train
    g = torch.Generator().manual_seed(seed)
    user_tokens, item_tokens_n = 200, 30
    item_tokens = torch.randint(0, item_tokens_n + 1, (items + 1, 3), generator=g)
    model = TwoTower(items, user_tokens, item_tokens_n, item_tokens, emb_dim=m.embedding_dim, hidden=m.hidden_dims,
                     out_dim=m.output_dim, omega=m.omega, arch=arch, heads=m.attention_heads,
                     layers=m.attention_layers)  # as divspa.models.checkpoint.build_model builds it
    opt = make_optimizer(model, t)
    rfm = RandomFeatureMasking(m, items, seed, torch.device("cpu")) if ssl == "rfm" else None
    times = []
    for i in range(steps + 3):
        users = UserInputs(torch.randint(1, user_tokens + 1, (t.batch_size, 4), generator=g),
                           torch.randint(0, items + 1, (t.batch_size, m.history_len), generator=g))
        pos_idx = torch.randint(1, items + 1, (t.batch_size,), generator=g)
        neg_idx = torch.randint(1, items + 1, (t.num_negatives,), generator=g)
        start = time.perf_counter()
        vecs = model.item_vectors(torch.cat([pos_idx, neg_idx]))
        loss = sampled_softmax_loss(model.user_vectors(users), vecs[:t.batch_size], vecs[t.batch_size:], pos_idx,
                                    neg_idx, model.omega).mean()
        if rfm is not None:  # as Trainer.with_ssl adds it
            loss = loss + rfm.loss(model, pos_idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def stored_values(n: int) -> None:
    """What n feature values cost as a checkpoint's vocabulary: a list of str (before 2026-12-07)
    against Arrow's buffer and offsets (now). Values like Video's: 57 fields, `f<field>=<value>`."""
    import gc
    import io
    import resource

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from divspa.models.encoding import token_tensors, tokens_from_tensors

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 1e6

    ids = pa.array(np.arange(n))
    field = pc.cast(pc.subtract(ids, pc.multiply(pc.divide(ids, 57), 57)), pa.string())
    values = pc.binary_join_element_wise(pc.binary_join_element_wise("f", field, ""), pc.cast(ids, pa.string()), "=")
    print(f"# {n:,} feature values, {values.nbytes / 1e6:.0f} MB as an Arrow array")
    print(f"{'stored as':<22}{'in memory MB':>14}{'file MB':>10}{'save s':>8}{'load s':>8}")
    for label, make, read in (
            ("list of str (old)", lambda: values.to_pylist(), lambda x: x),
            ("Arrow bytes+offsets", lambda: token_tensors(values), tokens_from_tensors)):
        gc.collect()
        before = rss_mb()
        held = make()
        grown = rss_mb() - before
        start = time.perf_counter()
        buf = io.BytesIO()
        torch.save({"tokens": held}, buf)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        read(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["tokens"])
        loaded = time.perf_counter() - start
        print(f"{label:<22}{grown:>14.0f}{len(buf.getvalue()) / 1e6:>10.0f}{saved:>8.1f}{loaded:>8.1f}", flush=True)
        del held, buf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", default="10000,100000,420000", help="vocabulary sizes (Video: 420,000 items)")
    ap.add_argument("--arch", default="youtubednn")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--ssl", default="none", choices=["none", "rfm"], help="rfm: each step with RFM's loss too")
    ap.add_argument("--values", type=int, default=0, help="instead: what this many feature values cost stored "
                    "(Video: 41,200,000)")
    args = ap.parse_args()
    if args.values:
        return stored_values(args.values)
    torch.set_num_threads(args.threads)
    print(f"# {args.arch}{' with RFM' if args.ssl == 'rfm' else ''}, {args.threads} thread(s), "
          f"median ms per step over {args.steps} steps")
    print(f"{'items':>9} {'dense':>9} {'sparse':>9} {'speed-up':>9}")
    for n in (int(x) for x in args.items.split(",")):
        dense, sparse = (step_ms(n, mode, args.arch, args.steps, ssl=args.ssl) for mode in (False, True))
        print(f"{n:>9,} {dense:>9.1f} {sparse:>9.1f} {dense / sparse:>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
