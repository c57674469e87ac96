# A stand-in "GPU node": what the node agent needs, an sshd, and what the example DAGs' jobs import.
# On a real GPU machine, add the NVIDIA driver (the agent finds GPUs with nvidia-smi) and PyTorch's
# CUDA build instead of the CPU one below.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server python3 python3-pip iproute2 procps util-linux \
 && rm -rf /var/lib/apt/lists/*
# The jobs run `python3` over SSH, so their packages go into the system's Python: a container has no
# other Python users to protect, which is what Debian's PEP 668 marker is for (--break-system-packages).
# PyTorch from its CPU index: PyPI's torch is the CUDA build, about 5 GB more that these nodes cannot
# use. Then what ddp_digits.py, the scoring and retrain scripts import (tensorboard: SummaryWriter).
ARG TORCH_VERSION=2.13.0
RUN pip3 install --no-cache-dir --break-system-packages --root-user-action=ignore \
      --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
 && pip3 install --no-cache-dir --break-system-packages --root-user-action=ignore \
      scikit-learn numpy pillow tensorboard \
 && python3 -c 'import torch, sklearn, tensorboard; assert torch.version.cuda is None, torch.__version__'
COPY docker/node-entrypoint.sh /usr/local/bin/node-entrypoint.sh
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/node-entrypoint.sh"]
