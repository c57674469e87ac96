#!/bin/sh
# A "GPU node" container: sshd with the host key and authorized key made by keygen.sh.
# Everything the node agent needs is python3 (>= 3.8), setsid, ip and a POSIX shell.
set -eu
dir="${SSH_KEYS_DIR:-/ssh-keys}"
node="${NODE_NAME:-$(hostname)}"
state="${SSHD_DIR:-/etc/ssh/batchai}"
for wait in $(seq 60); do [ -f "$dir/$node/host_key" ] && [ -f "$dir/client_key.pub" ] && break; sleep 1; done
[ -f "$dir/$node/host_key" ] || { echo "no host key for $node in $dir (did keygen run?)" >&2; exit 1; }
mkdir -p "$state" /run/sshd
cp "$dir/$node/host_key" "$state/host_key"
chmod 600 "$state/host_key"
cp "$dir/client_key.pub" "$state/authorized_keys"
cat > "$state/sshd_config" <<CONFIG
Port ${SSHD_PORT:-22}
ListenAddress ${LISTEN_ADDRESS:-0.0.0.0}
HostKey $state/host_key
PidFile $state/sshd.pid
AuthorizedKeysFile $state/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
CONFIG
exec "${SSHD_BIN:-/usr/sbin/sshd}" -D -e -f "$state/sshd_config"
