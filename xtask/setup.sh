#!/usr/bin/env bash
# Installs what building, running and testing synscope needs; idempotent (a second run takes
# seconds). Run as root on Debian 12 or newer.
set -euo pipefail

RUST_TOOLCHAIN=1.98.0       # aya 0.16 needs >= 1.98; its LLVM (22) must match bpf-linker's
# cargo xtask dist: a static synscope. Rust's musl target brings its own libc and start files,
# so no musl-tools are needed.
DIST_TARGET=x86_64-unknown-linux-musl
BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
# Build: bpf-linker links libLLVM. Tests: network namespaces, firewall rules, a real server and
# real load generators, bpftool for the benchmark; the kernel matrix: QEMU, a busybox
# initramfs, and the tools to unpack Debian's kernel packages and modules.
# The HTML report's test opens it in headless Chromium; serve's test has a real Prometheus
# scrape it (and promtool lint it); top's test reads its screen through tmux.
PACKAGES=(
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev
  iproute2 nftables nginx-light wrk apache2-utils procps util-linux bpftool bpftrace
  qemu-system-x86 busybox-static cpio xz-utils zstd kmod chromium
  prometheus curl tmux
  nodejs golang-go gunicorn
)

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and mounts tracefs"
command -v rustup >/dev/null || die "rustup is needed to install Rust ${RUST_TOOLCHAIN} (https://rustup.rs)"

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get could not install ${missing[*]} (llvm-${LLVM_MAJOR}-dev comes from Debian's bookworm-security or newer)"
fi
# nginx-light and prometheus start services when installed; the tests start their own.
for service in nginx prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done

installed=$(rustup component list --toolchain "$RUST_TOOLCHAIN" --installed 2>/dev/null || true)
if ! rustup run "$RUST_TOOLCHAIN" rustc --version >/dev/null 2>&1 \
   || ! grep -q '^rust-src' <<<"$installed" || ! grep -q '^clippy' <<<"$installed" \
   || ! grep -q '^rustfmt' <<<"$installed"; then
  say "installing Rust ${RUST_TOOLCHAIN} with rust-src, clippy and rustfmt"
  rustup toolchain install "$RUST_TOOLCHAIN" --profile minimal -c rust-src -c clippy -c rustfmt >/dev/null
fi
if ! rustup target list --toolchain "$RUST_TOOLCHAIN" --installed 2>/dev/null | grep -qx "$DIST_TARGET"; then
  say "adding the ${DIST_TARGET} target to Rust ${RUST_TOOLCHAIN} (cargo xtask dist)"
  rustup target add --toolchain "$RUST_TOOLCHAIN" "$DIST_TARGET" >/dev/null
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  say "building bpf-linker ${BPF_LINKER_VERSION} against LLVM ${LLVM_MAJOR} (about a minute)"
  LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo "+${RUST_TOOLCHAIN}" install --locked --quiet \
    bpf-linker --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-${LLVM_MAJOR}"
fi

if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing || die "cannot mount tracefs at /sys/kernel/tracing"
fi
say "ready"
