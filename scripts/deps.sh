#!/bin/bash
# Installs the Debian 12 packages the project builds and tests with.
# A no-op when they are all present. Needs root (or sudo) when something is missing.
set -euo pipefail
PKGS=(
  # toolchain (clang: the ThreadSanitizer build, with -Wthread-safety; its
  # TSan runtime is only a Recommends of clang)
  g++ clang libclang-rt-14-dev cmake ninja-build pkg-config python3
  # libraries
  libasio-dev libprotobuf-dev protobuf-compiler libsqlite3-dev libabsl-dev catch2
  libzstd-dev libssl-dev
  # Prometheus text format (replicad metrics; only its core library is used)
  prometheus-cpp-dev
  # real clients for end-to-end tests; ss (iproute2) shows who listens where
  swaks iproute2
  # a real MTA for the end-to-end routing test (test/postfix_e2e_test.cc);
  # the package only configures the default instance, which the tests leave alone
  postfix
  # the fault harness (test/faults/): nft rules in network namespaces,
  # wall-clock steps with libfaketime, a loop-mounted ext4 per host
  nftables faketime e2fsprogs util-linux
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y "${missing[@]}"
