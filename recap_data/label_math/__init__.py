"""The label math, in one place: rewards, returns, return bins, n-step returns, advantages,
thresholds and indicators, over arrays. The value model's targets, `label` and `relabel` all
run it; docs/value.md and docs/labels.md explain it.

Per episode of T frames, t = 0..T-1, normalizer Z (per task or global, see config.py), look-ahead N:
  reward         r_t = -1 for t < T-1;  r_{T-1} = 0 on success, -c_fail on failure
  return         R_t = sum_{t'>=t} r_t' = -(T-1-t) - c_fail * failed;  R~_t = R_t / Z, in [-1, 0]
  return bin     b_t = index of R~_t among B equal-width bins over [-1, 0] (bins.py)
  n-step return  G_t = sum_{t'=t}^{min(t+N,T)-1} r_t' / Z = -N/Z if t+N < T else R~_t
  advantage      A_t = G_t + V(o_{t+N}) - V(o_t), with V(o_{t+N}) = 0 when t+N >= T
  threshold      epsilon per task (or one over all frames): round(fraction * n) advantages lie
                 strictly above it, the midpoint of the two around that position
  indicator      I_t = A_t > epsilon, and always true on a human intervention

  config.py   RewardConfig (params.yaml `reward`: the value targets), AdvantageConfig (`advantage`: N,
              the positive fraction and the threshold mode)
  bins.py     the bins over [-1, 0]: encoding returns, decoding a predicted distribution
  kernels.py  the formulas above, compiled (numba): kernels.per_frame is where each per-frame
              formula is written, once; thresholds by a radix selection instead of a sort
  tables.py   the drivers over frame tables: compute_returns (the value model's targets),
              build_labels (every label column and per-task statistics), and the one-line error
              naming the frame of an input the kernels refuse

tests/label_reference.py holds the same definitions written plainly in pandas: the oracle the
kernels are checked against, bit for bit.
"""
