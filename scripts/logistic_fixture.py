"""Write tests/fixtures/logistic.json: a small multinomial logistic regression solved by
scikit-learn (L-BFGS, tight tolerance), the reference for clip-train's linear-probe solver
(crates/clip-train/src/logistic.rs). scikit-learn minimises C * sum(CE) + |W|^2 / 2, which
is ours (mean CE + l2/2 |W|^2, intercept unpenalised) with l2 = 1 / (C n).
Run with the fixture venv's python (scripts/venv.sh installs scikit-learn)."""
import json
import sys

import numpy as np
from sklearn import __version__ as skv
from sklearn.linear_model import LogisticRegression

rng = np.random.default_rng(7)
n, d, c = 120, 6, 3
x = rng.normal(size=(n, d)).astype(np.float32)
w_true = rng.normal(size=(d, c))
y = np.argmax(x @ w_true + rng.gumbel(size=(n, c)), axis=1)
C = 0.5
clf = LogisticRegression(C=C, solver="lbfgs", tol=1e-12, max_iter=100_000).fit(x, y)
w, b = clf.coef_.T, clf.intercept_  # [D, C], [C]
z = x @ w + b
logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
l2 = 1.0 / (C * n)
objective = -logp[np.arange(n), y].mean() + l2 / 2 * (w**2).sum()
out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/logistic.json"
json.dump(
    {
        "source": f"scikit-learn {skv} LogisticRegression(C={C}, solver='lbfgs', tol=1e-12)",
        "x": x.tolist(), "y": y.tolist(), "classes": c, "l2": l2,
        "w": w.tolist(), "b": b.tolist(), "objective": float(objective),
        "train_acc": float((clf.predict(x) == y).mean()),
    },
    open(out, "w"),
)
print(f"{out}: n={n} d={d} c={c} l2={l2:.5f} objective={objective:.6f}")
