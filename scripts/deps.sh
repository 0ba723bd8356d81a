# Sourced by the other scripts: installs the Debian packages ferrynet's tests and demo need,
# only those that are missing.
install_missing() {
  local need=() cmd pkg
  while [ $# -gt 0 ]; do
    cmd=$1 pkg=$2; shift 2
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "ferrynet creates network namespaces, bridges and nftables tables: run as root" >&2
    exit 1
  fi
}
