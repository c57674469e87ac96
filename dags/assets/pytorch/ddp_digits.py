"""Distributed data-parallel training of a small classifier on scikit-learn's digits, Batch AI style.

Runs as one rank of a ``pyTorchSettings`` job: the rendezvous comes from Batch AI's variables
(``AZ_BATCHAI_PYTORCH_INIT_METHOD``, ``AZ_BATCHAI_PYTORCH_BACKEND``) or torchrun's (``env://``).
gloo on CPU, nccl when the node has GPUs. Rank 0 writes one checkpoint per epoch into the
output directory, and TensorBoard curves into its ``tensorboard/`` folder: ``train/loss`` (averaged
over the ranks) and ``train/learning_rate`` every few steps, ``test/accuracy`` once an epoch, all
against the optimizer step. No downloads: the data set ships with scikit-learn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

try:
    import torch
    import torch.distributed as dist
    from sklearn.datasets import load_digits
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
except ImportError as missing:  # one clear line in the job's stderr (and the task's failure), not a traceback per rank
    sys.exit(
        f"ddp_digits.py needs PyTorch and scikit-learn on every node, and {missing.name or missing} is not installed "
        f"for {sys.executable}. On each node, for that Python: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu (PyTorch's CPU build; on a GPU node, "
        "without --index-url) and pip install scikit-learn tensorboard; or, in a clone of this repository, "
        "pip install -e '.[examples]' (whose torch is the CUDA build)"
    )

RENDEZVOUS_TIMEOUT = timedelta(seconds=120)
CURVES_FOLDER = "tensorboard"  # inside the output directory: the job page reads its event files
LOG_EVERY_STEPS = 4  # a few points per epoch: 12 steps an epoch on two ranks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default=os.environ.get("AZ_BATCHAI_OUTPUT_MODEL", "."))
    return parser.parse_args()


def setup() -> tuple[int, int, torch.device]:
    rank = int(os.environ.get("RANK", os.environ.get("AZ_BATCHAI_TASK_INDEX", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = os.environ.get("AZ_BATCHAI_PYTORCH_BACKEND", "nccl" if torch.cuda.is_available() else "gloo").lower()
    if backend == "nccl" and not torch.cuda.is_available():
        backend = "gloo"
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_method = os.environ.get("AZ_BATCHAI_PYTORCH_INIT_METHOD", "env://")
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=RENDEZVOUS_TIMEOUT)
    print(f"rank {rank}/{world} joined via {init_method.split('://')[0]}:// with {backend} on {device}", flush=True)
    return rank, world, device


def scalar_writer(folder: Path) -> torch.utils.tensorboard.SummaryWriter | None:
    """TensorBoard's writer for the curves, or None where TensorBoard is not installed: curves are
    never a reason to fail training, so that costs one line on stderr."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as missing:
        print(f"ddp_digits.py: no training curves, TensorBoard is not installed ({missing}): pip install tensorboard", file=sys.stderr)
        return None
    return SummaryWriter(str(folder))


def main() -> None:
    args = parse_args()
    rank, world, device = setup()
    check = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(check)
    expected = world * (world + 1) / 2
    print(f"rank {rank}: all_reduce sum = {check.item():.0f} (expected {expected:.0f})", flush=True)
    if check.item() != expected:
        raise SystemExit(f"all_reduce gave {check.item()}, expected {expected}")

    torch.manual_seed(0)
    digits = load_digits()
    features = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    split = int(len(labels) * 0.8)
    train_x, train_y = features[:split][rank::world].to(device), labels[:split][rank::world].to(device)
    test_x, test_y = features[split:].to(device), labels[split:].to(device)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    steps_per_epoch = (len(train_y) + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(  # over the whole run: as accurate in 2-3 epochs as a constant 0.01
        optimizer, T_max=args.epochs * steps_per_epoch, eta_min=0.002
    )
    loss_fn = nn.CrossEntropyLoss()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    writer = scalar_writer(output / CURVES_FOLDER) if rank == 0 else None
    window = torch.zeros(2, device=device)  # loss sum and steps since the last point
    step = 0
    try:
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            model.train()
            for start in range(0, len(train_y), args.batch_size):
                optimizer.zero_grad()
                loss = loss_fn(model(train_x[start : start + args.batch_size]), train_y[start : start + args.batch_size])
                loss.backward()
                optimizer.step()
                learning_rate = schedule.get_last_lr()[0]
                schedule.step()
                step += 1
                window += torch.stack([loss.detach(), torch.ones((), device=device)])
                if step % LOG_EVERY_STEPS == 0 or start + args.batch_size >= len(train_y):
                    dist.all_reduce(window)  # every rank takes as many steps (DDP needs that too), so all get here
                    if writer is not None:
                        writer.add_scalar("train/loss", (window[0] / window[1]).item(), step)
                        writer.add_scalar("train/learning_rate", learning_rate, step)
                    window.zero_()
            model.eval()
            with torch.no_grad():
                accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
            print(
                f"rank {rank} epoch {epoch}/{args.epochs}: loss {loss.item():.4f} test accuracy {accuracy:.3f} ({time.perf_counter() - started:.2f} s)",
                flush=True,
            )
            if rank == 0:
                torch.save(model.module.state_dict(), output / f"model_epoch{epoch}.pt")
            if writer is not None:
                writer.add_scalar("test/accuracy", accuracy, step)
                writer.flush()  # an epoch's points are on the page while the next one trains
    finally:
        if writer is not None:
            writer.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
