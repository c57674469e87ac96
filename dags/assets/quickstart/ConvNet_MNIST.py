"""The quickstart's training script, kept to its interface: ``ConvNet_MNIST.py DATA_DIR OUTPUT_DIR``.

The original trained a CNTK ConvNet on MNIST. This one trains a small two-layer network with
NumPy on the 8x8 digits that scikit-learn ships (see prepare_data.py), reads the same CNTK
text format, reports progress on stderr as CNTK did, and writes one model file per epoch
(``ConvNet_MNIST_<epoch>.dnn``) into OUTPUT_DIR. About a second on a laptop core.

Its loss and error rate per epoch also go to TensorBoard event files in ``OUTPUT_DIR/tensorboard``
(what the job's page in the Airflow UI draws as training curves), written with TensorBoard's own
writer where it is installed: training never fails for want of it.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

EPOCHS = 20
HIDDEN = 64
LEARNING_RATE = 0.2
BATCH = 32


def read_ctf(path: Path) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for line in path.read_text().splitlines():
        _, label_part, feature_part = line.split("|")
        labels.append(label_part.split()[1:].index("1"))
        features.append([float(v) / 16.0 for v in feature_part.split()[1:]])
    return np.array(features), np.array(labels)


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(0, x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return hidden, exp / exp.sum(axis=1, keepdims=True)


class Curves:
    """Scalars for TensorBoard, or nothing (with a note on stderr) where TensorBoard is not installed."""

    def __init__(self, folder: Path) -> None:
        try:
            from tensorboard.summary import Writer
        except ImportError:
            print("tensorboard is not installed here: no training curves (pip install tensorboard)", file=sys.stderr)
            self.writer = None
        else:
            self.writer = Writer(str(folder))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step=step)
            self.writer.flush()  # the page shows each epoch as it ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def main(data_dir: str, output_dir: str) -> None:
    train_x, train_y = read_ctf(Path(data_dir) / "Train-8x8_cntk_text.txt")
    test_x, test_y = read_ctf(Path(data_dir) / "Test-8x8_cntk_text.txt")
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(0, 0.1, (64, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0, 0.1, (HIDDEN, 10)),
        "b2": np.zeros(10),
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = Curves(out / "tensorboard")
    print(f"Training {sum(p.size for p in params.values())} parameters in {len(params)} parameter tensors.", file=sys.stderr)
    for epoch in range(1, EPOCHS + 1):
        started = time.perf_counter()
        order = rng.permutation(len(train_y))
        losses, errors = [], 0
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            x, y = train_x[batch], train_y[batch]
            hidden, probs = forward(params, x)
            losses.append(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
            errors += int((probs.argmax(axis=1) != y).sum())
            grad = probs.copy()
            grad[np.arange(len(y)), y] -= 1
            grad /= len(y)
            grad_hidden = (grad @ params["w2"].T) * (hidden > 0)
            params["w2"] -= LEARNING_RATE * hidden.T @ grad
            params["b2"] -= LEARNING_RATE * grad.sum(axis=0)
            params["w1"] -= LEARNING_RATE * x.T @ grad_hidden
            params["b1"] -= LEARNING_RATE * grad_hidden.sum(axis=0)
        elapsed = time.perf_counter() - started
        print(
            f"Finished Epoch[{epoch} of {EPOCHS}]: [Training] loss = {np.mean(losses):.6f} * {len(train_y)}, "
            f"metric = {100 * errors / len(train_y):.2f}% * {len(train_y)} {elapsed:.3f}s ({len(train_y) / elapsed:.1f} samples/s);",
            file=sys.stderr,
            flush=True,
        )
        curves.add("train/loss", float(np.mean(losses)), epoch)
        curves.add("train/error_rate", errors / len(train_y), epoch)
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        (out / f"ConvNet_MNIST_{epoch - 1}.dnn").write_bytes(buffer.getvalue())
    _, probs = forward(params, test_x)
    error_rate = float((probs.argmax(axis=1) != test_y).mean())
    curves.add("test/error_rate", error_rate, EPOCHS)
    curves.close()
    print(f"Final Results: Minibatch[1-1]: errs = {100 * error_rate:.2f}% * {len(test_y)}", file=sys.stderr)
    print(f"test accuracy {1 - error_rate:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: ConvNet_MNIST.py DATA_DIR OUTPUT_DIR")
    main(sys.argv[1], sys.argv[2])
