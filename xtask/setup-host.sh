#!/usr/bin/env bash
# Prepare a Debian 12 host to build, run and test lightwhale. Every step
# checks first and skips what is already in place, so running it again is
# cheap. It runs as root.
#
# Steps:
#   1. Debian packages: Docker engine, build and test tools.
#   2. CRIU 4.2 in a private prefix (/opt/lightwhale/criu), because
#      Debian 12's CRIU 3.17 fails on recent kernels and 4.1 cannot dump TCP
#      listeners on kernels from 6.16 on. The packages come from Debian's
#      newer suites with a low apt pin priority, so nothing on the system
#      is upgraded from them; a wrapper in /opt/lightwhale/bin runs the
#      binary with that prefix's own dynamic loader and libraries.
#   3. The eBPF toolchain: nightly Rust with rust-src, and bpf-linker; and
#      cargo-fuzz for the fuzz targets.
#   4. bpffs at /sys/fs/bpf.
#   5. The lightwhale runtime (/opt/lightwhale/bin/lightwhale-runc), with
#      which containers opt in to checkpoints through runc directly.
#   6. dockerd with experimental mode, the CRIU wrapper in its PATH and the
#      lightwhale runtime registered, only when no Docker engine responds.
#      A running engine is left as it is, unless this script started it
#      and it lacks the lightwhale runtime: then it is restarted once with
#      the runtime, which stops its containers.
set -euo pipefail

prefix=/opt/lightwhale
criu_root=$prefix/criu
log_dir=/var/log/lightwhale
dockerd_pid_file=/run/lightwhale-dockerd.pid
runtime_name=lightwhale
runtime_path=$prefix/bin/lightwhale-runc
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Taken by test and benchmark processes while they use the engine.
host_lock=/run/lightwhale-tests.lock

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (it installs packages and starts dockerd)" >&2
  exit 1
fi

install_packages() {
  local packages=(docker.io iptables bpftool clang busybox-static curl
    debootstrap redis-tools wrk hyperfine iproute2 llvm-22-dev jq conntrack)
  local missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

criu_works() {
  [ -x "$prefix/bin/criu" ] && "$prefix/bin/criu" --version 2>/dev/null | grep -q '^Version: 4\.2'
}

install_criu() {
  if criu_works; then
    return
  fi
  say "installing CRIU 4.2 into $criu_root"

  # Copy the mirror from the system's own sources, so no host name is
  # written here.
  local mirror
  mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  cat >/etc/apt/sources.list.d/lightwhale-criu.sources <<EOF
Types: deb
URIs: $mirror
Suites: trixie forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Priority 1: apt never installs or upgrades anything from these suites
  # on its own; they are only read by the explicit downloads below.
  cat >/etc/apt/preferences.d/lightwhale-criu <<EOF
Package: *
Pin: release n=trixie
Pin-Priority: 1

Package: *
Pin: release n=forky
Pin-Priority: 1
EOF
  apt-get update -qq

  local download_dir
  download_dir=$(mktemp -d)
  chmod 755 "$download_dir"
  (
    cd "$download_dir"
    apt-get download -qq criu/forky libcompel1/forky libnet9/forky libnl-3-200/forky
    apt-get download -qq libc6/trixie libgnutls30t64/trixie libnftables1/trixie \
      libprotobuf-c1/trixie libbsd0/trixie libmd0/trixie libuuid1/trixie \
      libunistring5/trixie libp11-kit0/trixie libidn2-0/trixie libtasn1-6/trixie \
      libhogweed6t64/trixie libnettle8t64/trixie libgmp10/trixie libmnl0/trixie \
      libnftnl11/trixie libxtables12/trixie libjansson4/trixie libffi8/trixie
  )
  rm -rf "$criu_root.new"
  mkdir -p "$criu_root.new"
  for deb in "$download_dir"/*.deb; do
    dpkg-deb -x "$deb" "$criu_root.new"
  done
  rm -rf "$download_dir" "$criu_root"
  mv "$criu_root.new" "$criu_root"

  mkdir -p "$prefix/bin"
  cat >"$prefix/bin/criu" <<EOF
#!/bin/sh
# CRIU 4.2 from Debian's newer suites, run with its own C library.
lib=$criu_root/usr/lib/x86_64-linux-gnu
exec "\$lib/ld-linux-x86-64.so.2" --library-path "\$lib" $criu_root/usr/sbin/criu "\$@"
EOF
  chmod 755 "$prefix/bin/criu"

  if ! criu_works; then
    echo "setup: CRIU 4.2 was unpacked but '$prefix/bin/criu --version' fails" >&2
    exit 1
  fi
  "$prefix/bin/criu" check >/dev/null 2>&1 || say "warning: 'criu check' reports problems; run '$prefix/bin/criu check' for details"
}

install_ebpf_toolchain() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly Rust toolchain"
    rustup toolchain install nightly --profile minimal
  fi
  if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "adding rust-src to the nightly toolchain"
    rustup component add rust-src --toolchain nightly
  fi
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    say "installing cargo-fuzz for the parser fuzz targets"
    cargo install --quiet --locked cargo-fuzz
  fi
  if ! command -v bpf-linker >/dev/null 2>&1; then
    say "building bpf-linker against LLVM 22 (about a minute)"
    PATH=/usr/lib/llvm-22/bin:$PATH cargo install --quiet bpf-linker --no-default-features --features llvm-22
  fi
}

mount_bpffs() {
  if ! mountpoint -q /sys/fs/bpf; then
    say "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
  fi
}

install_runtime() {
  local source=$script_dir/../runtime/lightwhale-runc
  if cmp -s "$source" "$runtime_path"; then
    return
  fi
  say "installing the lightwhale runtime at $runtime_path"
  mkdir -p "$prefix/bin"
  install -m 755 "$source" "$runtime_path.new"
  mv -f "$runtime_path.new" "$runtime_path"
}

runtime_registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | jq -e --arg name "$runtime_name" 'has($name)' >/dev/null
}

# Prints the PID of the dockerd that this script started, if it still runs.
own_dockerd_pid() {
  local pid
  pid=$(cat "$dockerd_pid_file" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    if runtime_registered; then
      return
    fi
    local pid
    if ! pid=$(own_dockerd_pid); then
      say "note: the running Docker engine has no '$runtime_name' runtime, so containers cannot use"
      say "  --runtime $runtime_name; add it under \"runtimes\" in /etc/docker/daemon.json (see README)"
      return
    fi
    # Wait for test and benchmark processes, whose containers the restart
    # would stop. The lock is released when this subshell ends.
    (
      flock 9
      # Another setup may have restarted it while this one waited.
      if runtime_registered; then
        exit 0
      fi
      say "restarting dockerd (pid $pid) to register the $runtime_name runtime; its containers stop"
      kill -TERM "$pid"
      for _ in $(seq 1 120); do
        [ -e "/proc/$pid" ] || break
        sleep 0.5
      done
      if [ -e "/proc/$pid" ]; then
        echo "setup: dockerd (pid $pid) did not exit within 60 s" >&2
        exit 1
      fi
      launch_dockerd
    ) 9>>"$host_lock"
    return
  fi
  launch_dockerd
}

launch_dockerd() {
  mkdir -p "$log_dir"
  say "starting dockerd with experimental mode (log: $log_dir/dockerd.log)"
  # runc looks up criu in the PATH that dockerd passes down to it.
  # setsid: dockerd must outlive the process group of the caller. The
  # subshell closes every descriptor it inherited beyond stdio first: one
  # held by the caller, such as the host lock that a restart holds, would
  # otherwise stay held for as long as dockerd and containerd run.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then
        eval "exec $fd>&-"
      fi
    done
    PATH=$prefix/bin:$PATH exec setsid dockerd --experimental \
      --add-runtime "$runtime_name=$runtime_path" >>"$log_dir/dockerd.log" 2>&1 </dev/null
  ) &
  echo $! >"$dockerd_pid_file"
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return
    fi
    sleep 0.5
  done
  echo "setup: dockerd did not respond within 30 s; see $log_dir/dockerd.log" >&2
  exit 1
}

install_packages
install_criu
install_ebpf_toolchain
mount_bpffs
install_runtime
start_dockerd
say "host ready"
