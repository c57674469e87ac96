"""Train the digits classifier a scheduled retrain publishes: logistic regression on scikit-learn's digits.

Writes ``model.pkl`` and ``metrics.json`` (held-out accuracy) to the MODEL output directory, and
TensorBoard curves into its ``tensorboard/`` folder: ``train/loss`` (log loss on the training
digits), ``train/accuracy`` and ``test/accuracy`` against the solver's L-BFGS iterations. Run as
a Batch AI job: ``train.py --output DIR --c C --train-fraction F``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import warnings
from typing import Any

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

MAX_ITERATIONS = 2000
CURVES_FOLDER = "tensorboard"  # inside the output directory: the job page reads its event files


def scalar_writer(folder: str) -> Any | None:
    """A TensorBoard writer: PyTorch's where the node has it, else TensorBoard's own (it needs only
    numpy), else None. Curves are never a reason to fail training: a missing TensorBoard costs one
    line on stderr."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(folder)
    except ImportError:
        pass
    try:
        from tensorboard.summary import Writer

        return Writer(folder)
    except ImportError as missing:
        print(f"train.py: no training curves, TensorBoard is not installed ({missing}): pip install tensorboard", file=sys.stderr)
        return None


def fit_tracing_curves(c: float, x_train: Any, y_train: Any, x_test: Any, y_test: Any, writer: Any | None) -> LogisticRegression:
    """The model ``LogisticRegression(C=c, max_iter=MAX_ITERATIONS)`` fits, with a point per doubling of
    its iterations on the way.

    scikit-learn's L-BFGS has no per-iteration callback, so the path is traced by fitting again with
    doubling iteration budgets: the solver is deterministic, so each fit is a prefix of the next and
    the first that stops short of its budget is the converged model itself. That costs about twice
    one fit, well under a second on the digits.
    """
    budget, last_step = 1, 0
    while True:
        with warnings.catch_warnings():
            if budget < MAX_ITERATIONS:  # a budget short of the convergence is the point; the last one warns as before
                warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=budget).fit(x_train, y_train)
        step = int(model.n_iter_.max())
        if writer is not None and step > last_step:
            writer.add_scalar("train/loss", log_loss(y_train, model.predict_proba(x_train), labels=model.classes_), step)
            writer.add_scalar("train/accuracy", model.score(x_train, y_train), step)
            writer.add_scalar("test/accuracy", model.score(x_test, y_test), step)
        last_step = step
        if step < budget or budget == MAX_ITERATIONS:
            return model.set_params(max_iter=MAX_ITERATIONS)  # pickled as the one fit made it before
        budget = min(2 * budget, MAX_ITERATIONS)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.data, digits.target, train_size=args.train_fraction, random_state=7)
    os.makedirs(args.output, exist_ok=True)
    writer = scalar_writer(os.path.join(args.output, CURVES_FOLDER))
    try:
        model = fit_tracing_curves(args.c, x_train / 16.0, y_train, x_test / 16.0, y_test, writer)
    finally:
        if writer is not None:
            writer.close()
    accuracy = float(model.score(x_test / 16.0, y_test))
    with open(os.path.join(args.output, "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    with open(os.path.join(args.output, "metrics.json"), "w") as handle:
        json.dump({"accuracy": accuracy, "c": args.c, "train_fraction": args.train_fraction}, handle)
    print(f"held-out accuracy {accuracy:.4f} (C={args.c}, train fraction {args.train_fraction})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
