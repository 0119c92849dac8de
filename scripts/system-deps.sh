#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks use, when we are root and they are missing.
# Without root, the tests that need them skip with a reason instead.
set -euo pipefail
want=()
command -v mkfs.btrfs >/dev/null 2>&1 || want+=(btrfs-progs)
command -v borg >/dev/null 2>&1 || want+=(borgbackup)
command -v restic >/dev/null 2>&1 || want+=(restic)
command -v rsync >/dev/null 2>&1 || want+=(rsync)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
command -v losetup >/dev/null 2>&1 || want+=(mount)
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
if [ ${#want[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root or no apt-get; tests needing ${want[*]} will skip" >&2
  exit 0
fi
echo "system-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
