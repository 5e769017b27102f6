"""DivSPA positive augmentation (paper §3.2): one Arrow pass over each user's rows.

Modules: items (the broadcast items' side), candidates (re-score and rank, numpy), sampling
(draw and weigh, pure numpy), job (the Spark job that runs them).

For each train positive (u, v+):
  u2i    the user's u2i neighbours;
  i2i    v+'s i2i neighbours;
  u2u2i  the train clicks of the user's u2u neighbours (real positives of similar users);
each candidate re-scored by the teacher as s(u, v) = cosine(u, v), v+ and u's fitted train items
excluded, the top k kept per strategy, m sampled, and weighted
w_i = s(u, v_i) / sum_j s(u, v_j) within (u, v+, strategy).

How it runs, and why (issue 18): Spark gathers one row per user (vector, positives, excluded
items, u2i list, pooled u2u2i items) and every task holds the items' side as one broadcast (item
vectors, each item's i2i list, its popularity discount). A task then re-scores, ranks and samples
a user's candidates in numpy: nothing is shuffled per candidate, no vector is joined onto a
candidate row, and the per-user lists of u2i and u2u2i are ranked once per user, not once per
positive. Spark moves rows per user and writes rows per sampled positive, so the cost grows with
clicks, not with clicks times candidates.

With augment.popularity_debias = g > 0 (not in the paper) every candidate is ranked, drawn and
weighted by its `selection` s(u, v) * (n_max / n_v)^g instead of s(u, v), n_v being v's fitted
train clicks: the teacher ranks what it saw often high, so its top-k alone narrows the student;
the discount trades some of that agreement for long-tail candidates. g = 0 is the paper's rule.
augment.rank_by = neighbour (the default; "teacher" is the paper's rule) ranks, draws and weighs i2i
candidates by s(v+, v) and u2u2i ones by the summed similarity to u of the similar users who
clicked them, instead of s(u, v).

Sampling is Efraimidis-Spirakis weighted sampling without replacement: candidate i gets the key
log(r_i) / p_i and the m largest keys win, where r_i is a uniform number hashed from
(seed, u, v+, strategy, candidate) with Spark's xxhash64 (divspa.xxhash, the same numbers
`F.xxhash64` gives). Every draw is a pure function of its row, so the table is identical whatever
the partitioning, executor count or retry history. Sums are taken in candidate-id order, one term
after the other, as Spark's window sums took them before this pass replaced them: the same seed
gives the same table bit for bit.
"""
