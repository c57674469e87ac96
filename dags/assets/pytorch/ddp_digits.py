"""Distributed data-parallel training of a small classifier on scikit-learn's digits, Batch AI style.

Runs as one rank of a ``pyTorchSettings`` job: the rendezvous comes from Batch AI's variables
(``AZ_BATCHAI_PYTORCH_INIT_METHOD``, ``AZ_BATCHAI_PYTORCH_BACKEND``) or torchrun's (``env://``).
gloo on CPU, nccl when the node has GPUs. Rank 0 writes one checkpoint per epoch into the
output directory. No downloads: the data set ships with scikit-learn.
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
        f"for {sys.executable}: pip install 'airflow-provider-batchai[examples]' (or torch scikit-learn) there"
    )

RENDEZVOUS_TIMEOUT = timedelta(seconds=120)


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
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        for start in range(0, len(train_y), args.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[start : start + args.batch_size]), train_y[start : start + args.batch_size])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
        print(
            f"rank {rank} epoch {epoch}/{args.epochs}: loss {loss.item():.4f} test accuracy {accuracy:.3f} ({time.perf_counter() - started:.2f} s)",
            flush=True,
        )
        if rank == 0:
            torch.save(model.module.state_dict(), output / f"model_epoch{epoch}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
