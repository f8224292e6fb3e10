#!/usr/bin/env bash
# QEMU/KVM boots the stock test guest (PVH vmlinux + initramfs): proves the
# bench works. The guest reports its CPUs and memory, then powers off, and
# QEMU must exit by itself.
# timeout: 120
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"

console=$LOGS/l2-console.log
qemu_l2 "$console" -append "$(guest_cmdline cpus,mem,poweroff)"
expect_marker "$console" GUEST-READY 60
expect_marker "$console" GUEST-POWEROFF 30
expect_exit "$BG_PID" 30 0

cpus=$(marker_value "$console" GUEST-CPUS=)
[ "$cpus" = 1 ] || fail "guest saw '$cpus' CPUs, expected 1"
mem=$(marker_value "$console" GUEST-MEM-KB=)
# 256 MiB minus what the kernel keeps for itself.
if [ "${mem:-0}" -le 150000 ] || [ "$mem" -gt 262144 ]; then
    fail "guest memory '$mem' KiB is not about 256 MiB"
fi
info "guest saw $cpus CPUs and $mem KiB"
