#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine, as root: installs what the tests need,
# builds, and runs every test. Tests build their own network namespaces and never touch the
# root namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
require_root
install_missing protoc protobuf-compiler etcd etcd-server iperf3 iperf3 openssl openssl \
  ip iproute2 nft nftables ping iputils-ping iptables iptables \
  /usr/lib/cni/host-local containernetworking-plugins \
  podman podman runc runc pkg: busybox-static nsenter util-linux containerd containerd \
  bird bird2 dockerd docker.io

cargo build --features failpoints --all-targets
cargo test --features failpoints -- --test-threads "${TEST_THREADS:-4}"
