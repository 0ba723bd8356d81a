# Sourced by the other scripts: installs the Debian packages ferrynet's tests and demo need,
# only those that are missing. Arguments are pairs: a command (or an absolute path) that the
# package provides, or "pkg:" to check the package itself, then the package's name.
install_missing() {
  local need=() probe pkg
  while [ $# -gt 0 ]; do
    probe=$1 pkg=$2; shift 2
    if [ "$probe" = "pkg:" ]; then
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    else
      command -v "$probe" >/dev/null 2>&1 || need+=("$pkg")
    fi
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
