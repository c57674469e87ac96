"""Train the digits classifier a scheduled retrain publishes: logistic regression on scikit-learn's digits.

Writes ``model.pkl`` and ``metrics.json`` (held-out accuracy) to the MODEL output directory. Run as
a Batch AI job: ``train.py --output DIR --c C --train-fraction F``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.data, digits.target, train_size=args.train_fraction, random_state=7)
    model = LogisticRegression(C=args.c, max_iter=2000).fit(x_train / 16.0, y_train)
    accuracy = float(model.score(x_test / 16.0, y_test))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    with open(os.path.join(args.output, "metrics.json"), "w") as handle:
        json.dump({"accuracy": accuracy, "c": args.c, "train_fraction": args.train_fraction}, handle)
    print(f"held-out accuracy {accuracy:.4f} (C={args.c}, train fraction {args.train_fraction})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
