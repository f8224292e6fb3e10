#!/usr/bin/env bash
# Our runtime boots the stock test guest through vm-run: the PVH vmlinux
# and the bzImage, with 1 and 2 vCPUs; the guest sees its CPUs and memory
# and powers off (status 0), reboots (status 11, EAGAIN: "restart me"), and
# shuts down when vm-run presses the ACPI power button (SIGTERM).
# timeout: 400
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
need_bin vm-run

# boot NAME KERNEL CPUS ACTIONS: starts vm-run in the background, console in
# $LOGS/NAME.log; sets BG_PID and CONSOLE.
boot() {
    CONSOLE=$LOGS/$1.log
    BOOT_START=$(date +%s.%N)
    start_bg "$CONSOLE" "$BIN/vm-run" -m 256M -C "$3" -b "$2" \
        -I "$GUEST/initramfs.cpio.gz" -k "$(guest_cmdline "$4")"
}

# elapsed WHAT: how long since the last boot started (a figure for the log,
# never checked).
elapsed() {
    info "$1 $(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $BOOT_START }") s after start"
}

# check_cpus_mem CPUS: the markers of the cpus and mem actions.
check_cpus_mem() {
    local cpus mem
    cpus=$(marker_value "$CONSOLE" GUEST-CPUS=)
    [ "$cpus" = "$1" ] || fail "guest saw '$cpus' CPUs, expected $1"
    mem=$(marker_value "$CONSOLE" GUEST-MEM-KB=)
    [ "${mem:-0}" -gt 150000 ] && [ "$mem" -le 262144 ] || fail "guest memory '$mem' KiB is not about 256 MiB"
    info "guest saw $cpus CPUs and $mem KiB"
}

info "PVH vmlinux, 1 vCPU: cpus, mem, poweroff"
boot pvh-1cpu "$GUEST/vmlinux" 1 cpus,mem,poweroff
expect_marker "$CONSOLE" GUEST-READY 90
elapsed GUEST-READY
expect_marker "$CONSOLE" GUEST-POWEROFF 30
expect_exit "$BG_PID" 30 0
elapsed "vm-run exited"

check_cpus_mem 1

info "bzImage, 2 vCPUs: cpus, mem, poweroff"
boot bzimage-2cpu "$GUEST/vmlinuz" 2 cpus,mem,poweroff
expect_marker "$CONSOLE" GUEST-READY 120
elapsed GUEST-READY
expect_marker "$CONSOLE" GUEST-POWEROFF 30
expect_exit "$BG_PID" 30 0
elapsed "vm-run exited"

check_cpus_mem 2

info "PVH vmlinux, 2 vCPUs: reboot"
boot pvh-2cpu-reboot "$GUEST/vmlinux" 2 cpus,reboot
expect_marker "$CONSOLE" GUEST-REBOOT 120
expect_exit "$BG_PID" 30 11
[ "$(marker_value "$CONSOLE" GUEST-CPUS=)" = 2 ] || fail "guest did not see 2 CPUs"

info "PVH vmlinux: the power button"
boot pvh-acpi "$GUEST/vmlinux" 1 acpi
expect_marker "$CONSOLE" GUEST-ACPI-WAIT 90
# The guest starts listening to its input device just around the WAIT line:
# press (SIGTERM), and press again if the first press came too early.
for try in 1 2 3; do
    sleep 1
    info "pressing the power button ($try)"
    kill -TERM "$BG_PID"
    wait_for_marker "$CONSOLE" GUEST-ACPI-POWEROFF 10 && break
done
expect_marker "$CONSOLE" GUEST-ACPI-POWEROFF 1
expect_exit "$BG_PID" 30 0
