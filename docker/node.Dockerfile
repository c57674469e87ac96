# A stand-in "GPU node": what the node agent needs and an sshd. On a real GPU machine, add the
# NVIDIA driver; the agent finds GPUs with nvidia-smi.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server python3 iproute2 procps util-linux \
    python3-numpy python3-pil python3-sklearn \
 && rm -rf /var/lib/apt/lists/*
COPY docker/node-entrypoint.sh /usr/local/bin/node-entrypoint.sh
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/node-entrypoint.sh"]
