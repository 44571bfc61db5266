"""Record the pre-refactor IRN random walk (commit 265af03) as a regression fixture."""
import numpy as np, torch
from esol.irn.random_walk import random_walk, transition_matrix
rng = np.random.default_rng(16)
out = {}
for name, (h, w, c, radius, beta, t) in {"a": (12, 17, 3, 5, 10.0, 3), "b": (9, 8, 2, 3, 3.0, 8)}.items():
    boundary = (rng.random((h, w)) ** 3).astype(np.float32)
    boundary[h // 2, :] = 0.97
    scores = rng.random((c, h, w)).astype(np.float32)
    walked = random_walk(torch.from_numpy(scores), torch.from_numpy(boundary), radius, beta, t)
    p = transition_matrix(torch.from_numpy(boundary), radius, beta).to_dense()
    out.update({f"{name}_boundary": boundary, f"{name}_scores": scores,
                f"{name}_params": np.array([radius, beta, t], np.float64),
                f"{name}_walked": walked.numpy(), f"{name}_transition": p.numpy()})
np.savez_compressed("tests/data/irn_walk_reference.npz", **out)
print({k: v.shape for k, v in out.items()})
