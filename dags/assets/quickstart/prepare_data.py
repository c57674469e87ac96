"""Write scikit-learn's handwritten digits as CNTK text-format files, like the quickstart's MNIST data.

    python prepare_data.py OUT_DIR   ->  OUT_DIR/Train-8x8_cntk_text.txt, OUT_DIR/Test-8x8_cntk_text.txt

Each line: ``|labels <one-hot of 10> |features <64 pixel values 0-16>``. No downloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.datasets import load_digits

TEST_FRACTION = 0.2


def ctf_line(pixels: list[float], label: int) -> str:
    one_hot = " ".join("1" if i == label else "0" for i in range(10))
    return f"|labels {one_hot} |features {' '.join(str(int(p)) for p in pixels)}\n"


def main(out_dir: str) -> None:
    digits = load_digits()
    split = int(len(digits.target) * (1 - TEST_FRACTION))
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("Train", range(split)), ("Test", range(split, len(digits.target)))):
        with open(folder / f"{name}-8x8_cntk_text.txt", "w") as handle:
            handle.writelines(ctf_line(digits.data[i], int(digits.target[i])) for i in rows)
    print(f"wrote {split} training and {len(digits.target) - split} test digits to {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
