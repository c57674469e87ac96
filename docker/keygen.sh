#!/bin/sh
# One-shot: the SSH keys of the compose setup, in $SSH_KEYS_DIR (a shared volume).
#   client_key(.pub)        Airflow's key to log in to the nodes
#   <node>/host_key(.pub)   each node's host key (the node's sshd uses it)
#   known_hosts             those host keys, so Airflow verifies the nodes (no insecure option)
# Idempotent: keys that exist are kept.
set -eu
dir="${SSH_KEYS_DIR:-/ssh-keys}"
nodes="${NODES:-node1 node2}"
port="${SSHD_PORT:-22}"
mkdir -p "$dir"
[ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N "" -C batchai-airflow -f "$dir/client_key"
: > "$dir/known_hosts.new"
for node in $nodes; do
  mkdir -p "$dir/$node"
  [ -f "$dir/$node/host_key" ] || ssh-keygen -q -t ed25519 -N "" -C "$node" -f "$dir/$node/host_key"
  if [ "$port" = 22 ]; then name="$node"; else name="[$node]:$port"; fi
  echo "$name $(cut -d' ' -f1,2 "$dir/$node/host_key.pub")" >> "$dir/known_hosts.new"
done
mv "$dir/known_hosts.new" "$dir/known_hosts"
chmod 600 "$dir/client_key"
echo "keys ready in $dir for: $nodes"
