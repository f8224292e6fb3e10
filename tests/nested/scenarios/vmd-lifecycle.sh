#!/usr/bin/env bash
# The stock test guest through the daemon: vmd started with a vm.conf,
# `vmctl start` of a config VM, its console markers read from the pty vmd
# created, a graceful `vmctl stop` (the guest's acpi action powers off on
# the power button), a guest reboot restarting the VM on the same tty, and
# `vmctl stop -f`.
# timeout: 400
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
need_bin vmd
need_bin vmctl

sock=$WORK/vmd.sock
conf=$WORK/vm.conf
vm() {
    cat <<CONF
vm "$1" {
	disable
	boot "$GUEST/vmlinux"
	initrd "$GUEST/initramfs.cpio.gz"
	cmdline "$(guest_cmdline "$2")"
	memory 256M
}
CONF
}
{ vm acpi acpi; vm boots cpus,reboot; } >"$conf"
"$BIN/vmd" -n -f "$conf" || fail "vmd -n refused the configuration"
start_bg "$LOGS/vmd.log" "$BIN/vmd" -dv -f "$conf" -s "$sock"
vmd_pid=$BG_PID
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
ctl() { "$BIN/vmctl" -s "$sock" "$@"; }

# start NAME: starts a config VM, copies its console to $LOGS/NAME.log;
# sets TTY.
start() {
    local out
    out=$(ctl start "$1" 2>&1) || fail "vmctl start $1: $out"
    info "$out"
    TTY=${out##*tty }
    [ -c "$TTY" ] || fail "no console tty in '$out'"
    start_bg "$LOGS/$1.log" cat "$TTY"
}

info "graceful stop: the power button"
start acpi
expect_marker "$LOGS/acpi.log" GUEST-ACPI-WAIT 120
ctl status | tee "$LOGS/status-running.txt"
grep -q ' running acpi$' "$LOGS/status-running.txt" || fail "acpi is not running"
ctl stop -w acpi || fail "vmctl stop -w acpi failed"
expect_marker "$LOGS/acpi.log" GUEST-ACPI-POWEROFF 10
ctl status acpi | tee "$LOGS/status-stopped.txt"
grep -q ' stopped acpi$' "$LOGS/status-stopped.txt" || fail "acpi did not stop"

info "reboot: restarted on the same tty"
start boots
expect_marker "$LOGS/boots.log" GUEST-REBOOT 150
for _ in $(seq 300); do
    [ "$(grep -c GUEST-READY "$LOGS/boots.log")" -ge 2 ] && break
    sleep 1
done
# The same cat on the same tty saw both boots: the console was kept.
[ "$(grep -c GUEST-READY "$LOGS/boots.log")" -ge 2 ] || fail "the VM did not come back on its tty after the reboot"
grep -q "the guest rebooted, restarting it" "$LOGS/vmd.log" || fail "vmd did not log the restart"

# The guest reboots on every boot: vmd restarts it until three restarts
# came less than 6 s apart, so it may be running or already stopped.
info "forced stop"
if ctl status boots | grep -q ' running boots$'; then
    ctl stop -f -w boots || ctl status boots | grep -q ' stopped boots$' || fail "vmctl stop -f boots failed"
fi
ctl status boots | grep -q ' stopped boots$' || fail "boots did not stop"

kill -TERM "$vmd_pid"
expect_exit "$vmd_pid" 30 0
[ ! -e "$sock" ] || fail "vmd left its socket behind"
info "ok"
