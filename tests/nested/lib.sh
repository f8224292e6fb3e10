# Shell library for real-guest scenarios (tests/nested/scenarios/*.sh) and
# the benchmarks; source it from bash. A scenario runs either inside the
# nested bench's L1 or directly on a host with hardware virtualization, with
# the same paths in both cases.
#
# Variables:
#   ROOT      the project root
#   GUEST     target/guest (vmlinux, vmlinuz, initramfs.cpio.gz, disks)
#   BIN       the release binaries (vmd, vmctl, vm-run): $VMD_BIN if set,
#             else $CARGO_TARGET_DIR/release or target/release
#   SCENARIO  the scenario's name (its file name without .sh)
#   LOGS      a directory for this scenario's logs (L2 consoles ...); printed
#             when the scenario fails, and brought back to the host
#   WORK      a scratch directory (tmpfs in L1), removed at exit
#   GUEST_*   facts from target/guest/guest.env (markers, pattern md5)
# Functions: see each one's comment. Background processes started with
# start_bg are killed when the scenario exits.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GUEST=$ROOT/target/guest
BIN=${VMD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SCENARIO=${SCENARIO:-$(basename "$0" .sh)}
LOGS=${LOGS:-$ROOT/target/nested/logs/$SCENARIO}
mkdir -p "$LOGS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scenario-$SCENARIO.XXXXXX")
# shellcheck source=/dev/null
. "$GUEST/guest.env"

_bg_pids=()
_cleanup() {
    local pid
    for pid in "${_bg_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${_bg_pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then sleep 1; kill -KILL "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap _cleanup EXIT

# info MSG...: a progress line on stdout (kept in the scenario's log).
info() {
    echo "$SCENARIO: $*"
}

# fail MSG...: prints the reason and ends the scenario with status 1.
fail() {
    echo "$SCENARIO: FAIL: $*" >&2
    exit 1
}

# skip MSG...: ends the scenario as skipped (status 77).
skip() {
    echo "$SCENARIO: SKIP: $*" >&2
    exit 77
}

# need_bin NAME: skips the scenario unless $BIN/NAME exists.
need_bin() {
    [ -x "$BIN/$1" ] || skip "$BIN/$1 is not built"
}

# guest_cmdline ACTIONS: the kernel command line for the test guest.
guest_cmdline() {
    echo "console=ttyS0 quiet vmd.actions=$1"
}

# start_bg LOGFILE CMD [ARGS...]: runs CMD in the background with stdin from
# /dev/null and stdout+stderr to LOGFILE; sets BG_PID. Killed at exit.
start_bg() {
    local logfile=$1
    shift
    "$@" </dev/null >"$logfile" 2>&1 &
    BG_PID=$!
    _bg_pids+=("$BG_PID")
}

# qemu_l2 LOGFILE [QEMU ARGS...]: starts QEMU/KVM on the test guest in the
# background (q35, 1 vCPU, 256 MiB, -nodefaults, console on LOGFILE, PVH
# vmlinux + initramfs), with the extra arguments given (e.g. -append ...,
# -smp 2, -drive ...). Sets BG_PID.
qemu_l2() {
    local logfile=$1
    shift
    start_bg "$logfile" qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m 256M \
        -nodefaults -no-reboot -display none -serial stdio -monitor none \
        -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" "$@"
}

# vmrun_l2 LOGFILE [VM-RUN ARGS...]: starts our $BIN/vm-run on the test
# guest in the background (1 vCPU, 256 MiB, PVH vmlinux + initramfs, console
# on LOGFILE), with the extra arguments given (e.g. -k "$(guest_cmdline
# cpus,poweroff)", -C 2, -d disk; later flags override earlier ones). Skips
# the scenario if vm-run is not built. Sets BG_PID.
vmrun_l2() {
    local logfile=$1
    shift
    need_bin vm-run
    start_bg "$logfile" "$BIN/vm-run" -m 256M -C 1 -b "$GUEST/vmlinux" -I "$GUEST/initramfs.cpio.gz" "$@"
}

# wait_for_marker FILE MARKER TIMEOUT: waits until a line of FILE contains
# MARKER (fixed string); status 1 after TIMEOUT seconds without it.
wait_for_marker() {
    local file=$1 marker=$2 timeout=$3 start=$SECONDS
    until grep -qF -- "$marker" "$file" 2>/dev/null; do
        ((SECONDS - start < timeout)) || return 1
        sleep 0.1
    done
}

# expect_marker FILE MARKER TIMEOUT: wait_for_marker, failing the scenario
# with the console's tail when the marker does not show up.
expect_marker() {
    if ! wait_for_marker "$@"; then
        echo "--- last lines of $1:" >&2
        tail -n 20 "$1" >&2
        fail "no '$2' in $1 within $3 s"
    fi
    info "saw $2"
}

# marker_value FILE PREFIX: prints the rest of the first line of FILE that
# starts with PREFIX (e.g. marker_value log GUEST-CPUS= prints 2).
marker_value() {
    sed -n "s/^$2//p" "$1" | tr -d '\r' | head -n 1
}

# wait_exit PID TIMEOUT: waits for background process PID to end and returns
# its exit status; status 124 (and the process is killed) after TIMEOUT
# seconds.
wait_exit() {
    local pid=$1 timeout=$2 start=$SECONDS status
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS - start >= timeout)); then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            return 124
        fi
        # A finished child stays a zombie until waited for: look at its state.
        [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
        sleep 0.1
    done
    status=0
    wait "$pid" || status=$?
    return "$status"
}

# expect_exit PID TIMEOUT STATUS: wait_exit, failing the scenario unless
# the process exits with STATUS in time.
expect_exit() {
    local status=0
    wait_exit "$1" "$2" || status=$?
    [ "$status" = 124 ] && [ "$3" != 124 ] && fail "process $1 still running after $2 s"
    [ "$status" = "$3" ] || fail "process $1 exited with status $status, expected $3"
    info "process exited with status $status"
}
