#!/usr/bin/env bash
# Builds ferrynet and runs its demo in throwaway namespaces (no etcd, no other service).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
require_root
install_missing protoc protobuf-compiler ip iproute2 nft nftables ping iputils-ping
cargo build --release
exec ./target/release/ferrynet demo "$@"
