//! Confinement of the daemon's children, our pledge(2) and unveil(2):
//! a seccomp-bpf allow-list per role and Landlock file-system rules (what
//! vmd's `proc.c` and each process's pledge promises do on OpenBSD).
//!
//! The control process gets both: it only relays packets between sockets
//! it already holds, so it may call a handful of system calls and open no
//! file at all. vmm and the vm processes it starts (filters and rulesets
//! are inherited across exec) may run a VM: their Landlock ruleset allows
//! executing the daemon's binary with its libraries, nothing else (even
//! `/dev/kvm` comes from the parent as a descriptor). vmm's seccomp
//! allow-list is [`VMM_SYSCALLS`] plus [`VM_SYSCALLS`] (a vm process lives
//! under it from its fork to its exit, so it also covers a vm's start-up);
//! once its VM is built, a vm process adds its own, tighter allow-list,
//! [`VM_SYSCALLS`], for every thread ([`confine_vm`]). In both, `ioctl`
//! is allowed for KVM and terminal requests only.
//!
//! A system call outside the list raises `SIGSYS` (`SECCOMP_RET_TRAP`)
//! instead of running; the handler writes which one to standard error
//! (vmd's log in the foreground) and ends the process with status 159
//! (128 + `SIGSYS`). Trapping rather than `SECCOMP_RET_KILL_PROCESS`
//! makes a violation diagnosable without the kernel's audit log;
//! trapping rather than failing with `EPERM` keeps a half-working VM from
//! carrying on after the unexpected. The call itself never runs either
//! way, and a vm process may not change its signal handlers.

use std::collections::BTreeMap;

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why a child could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The seccomp filter could not be built
    #[error("could not build the seccomp filter")]
    Filter(#[from] seccompiler::BackendError),
    /// The seccomp filter could not be compiled or loaded
    #[error("could not load the seccomp filter")]
    Seccomp(#[from] seccompiler::Error),
    /// The Landlock ruleset could not be applied
    #[error("could not apply the Landlock ruleset")]
    Landlock(#[from] landlock::RulesetError),
    /// Capabilities could not be dropped
    #[error("could not drop capabilities")]
    Caps(#[source] std::io::Error),
    /// The SIGSYS handler could not be installed
    #[error("could not install the SIGSYS handler")]
    Sigsys(#[source] std::io::Error),
}

/// The system calls the control process makes once it serves clients,
/// each with the reason.
const CONTROL_SYSCALLS: &[(i64, &str)] = &[
    (
        libc::SYS_poll,
        "wait for the parent, the listener and clients",
    ),
    (
        libc::SYS_ppoll,
        "the same, as some libc versions spell poll",
    ),
    (libc::SYS_accept4, "accept a client on the control socket"),
    (libc::SYS_getsockopt, "SO_PEERCRED: who the client is"),
    (libc::SYS_recvmsg, "read a request or a parent message"),
    (libc::SYS_recvfrom, "peek at the size of the next packet"),
    (libc::SYS_sendmsg, "relay a request or a reply"),
    (libc::SYS_sendto, "send a log line to syslog's /dev/log"),
    (libc::SYS_write, "log to stderr in the foreground"),
    (
        libc::SYS_writev,
        "log to stderr in the foreground (vectored)",
    ),
    (libc::SYS_fcntl, "read and set O_NONBLOCK"),
    (libc::SYS_close, "drop a departed client"),
    (libc::SYS_getpid, "the pid in syslog lines"),
    (libc::SYS_brk, "the allocator"),
    (libc::SYS_mmap, "the allocator"),
    (libc::SYS_munmap, "the allocator"),
    (libc::SYS_mremap, "the allocator"),
    (libc::SYS_madvise, "the allocator returning memory"),
    (libc::SYS_futex, "locks in std and tracing"),
    (libc::SYS_clock_gettime, "time, when the vDSO is not used"),
    (libc::SYS_rt_sigreturn, "return from a signal handler"),
    (libc::SYS_rt_sigprocmask, "std's abort path"),
    (
        libc::SYS_sigaltstack,
        "std's stack overflow handler at thread exit",
    ),
    (
        libc::SYS_restart_syscall,
        "a poll interrupted by a stopped process",
    ),
    (libc::SYS_exit, "end of the thread"),
    (libc::SYS_exit_group, "end of the process"),
];

/// The system calls of a vm process once its VM is built (memory mapped,
/// vCPUs and devices created, threads of the RTC started): the vCPU
/// threads, the console and RTC threads, the thread serving vmm's
/// channel, and the way out. Each with the reason.
const VM_SYSCALLS: &[(i64, &str)] = &[
    (
        libc::SYS_ioctl,
        "KVM_RUN and vCPU/VM state, IRQ lines (KVM requests only); \
         terminal modes and FIONBIO on the console (tty requests only)",
    ),
    (libc::SYS_read, "console input; eventfd counters"),
    (
        libc::SYS_write,
        "console output; eventfd signals; log lines",
    ),
    (libc::SYS_writev, "log lines to stderr (vectored)"),
    (libc::SYS_lseek, "std's reads of files and eventfds"),
    (libc::SYS_poll, "console input thread: tty and stop eventfd"),
    (
        libc::SYS_ppoll,
        "the same, as some libc versions spell poll",
    ),
    (libc::SYS_recvmsg, "vmm's pause/unpause/stop messages"),
    (libc::SYS_recvfrom, "peek at the size of vmm's next message"),
    (libc::SYS_sendmsg, "replies to vmm"),
    (libc::SYS_sendto, "log lines to syslog's /dev/log"),
    (libc::SYS_fcntl, "the console's O_NONBLOCK"),
    (libc::SYS_close, "eventfds and descriptors at teardown"),
    (libc::SYS_eventfd2, "the stop event of the console thread"),
    (libc::SYS_clone3, "start vCPU, console and channel threads"),
    (libc::SYS_clone, "start threads, where clone3 is not used"),
    (libc::SYS_set_robust_list, "new thread set-up (libc)"),
    (libc::SYS_rseq, "new thread set-up (libc)"),
    (libc::SYS_sched_getaffinity, "new thread set-up (std)"),
    (
        libc::SYS_sigaltstack,
        "std's stack overflow guard per thread",
    ),
    (libc::SYS_prctl, "PR_SET_NAME: names of new threads"),
    (libc::SYS_gettid, "thread ids in log lines and kicks"),
    (libc::SYS_getpid, "the pid in syslog lines and kicks"),
    (libc::SYS_tgkill, "kick a vCPU thread out of KVM_RUN"),
    (
        libc::SYS_rt_sigprocmask,
        "unblock the kick signal on vCPU threads",
    ),
    (libc::SYS_rt_sigreturn, "return from the kick handler"),
    (
        libc::SYS_rt_sigtimedwait,
        "vm-run's signal thread waits for SIGTERM/SIGINT",
    ),
    (libc::SYS_futex, "locks, condition variables, joins"),
    (libc::SYS_mmap, "the allocator; thread stacks"),
    (libc::SYS_munmap, "the allocator; thread stacks"),
    (libc::SYS_mprotect, "guard pages of thread stacks"),
    (libc::SYS_mremap, "the allocator"),
    (libc::SYS_madvise, "the allocator returning memory"),
    (libc::SYS_brk, "the allocator"),
    (libc::SYS_getrandom, "std's hash map keys"),
    (
        libc::SYS_clock_gettime,
        "RTC and timing, when the vDSO is not used",
    ),
    (libc::SYS_clock_nanosleep, "short waits (std's sleep)"),
    (libc::SYS_nanosleep, "short waits, older libc"),
    (libc::SYS_sched_yield, "spin loops in locks"),
    (
        libc::SYS_restart_syscall,
        "a wait interrupted by a stopped process",
    ),
    (libc::SYS_exit, "end of a thread"),
    (libc::SYS_exit_group, "end of the process"),
];

/// What vmm calls on top of [`VM_SYSCALLS`], for itself (starting vm
/// processes, relaying messages, reaping) and for a vm process between
/// its fork and its own filter (exec, the loader, building the VM). Each
/// with the reason.
const VMM_SYSCALLS: &[(i64, &str)] = &[
    (libc::SYS_socketpair, "the channel to a new vm process"),
    (libc::SYS_dup2, "a new vm's descriptors at their numbers"),
    (libc::SYS_execve, "re-execute the daemon as a vm process"),
    (libc::SYS_wait4, "reap vm processes"),
    (libc::SYS_kill, "end overdue vm processes"),
    (libc::SYS_signalfd4, "vmm's SIGCHLD descriptor"),
    (libc::SYS_rt_sigaction, "signal set-up, in vmm and a vm"),
    (
        libc::SYS_openat,
        "the loader opens libraries (Landlock limits)",
    ),
    (libc::SYS_access, "the loader"),
    (libc::SYS_newfstatat, "the loader; std's file metadata"),
    (libc::SYS_statx, "std's file metadata: the initrd's size"),
    (libc::SYS_fstat, "file metadata, older libc"),
    (libc::SYS_pread64, "the loader reads ELF headers"),
    (
        libc::SYS_arch_prctl,
        "the loader sets up thread-local storage",
    ),
    (libc::SYS_set_tid_address, "the loader's thread set-up"),
    (libc::SYS_prlimit64, "std's main thread stack size"),
    (libc::SYS_geteuid, "a vm checks that it runs unprivileged"),
    (libc::SYS_seccomp, "a vm installs its own, tighter filter"),
    (
        libc::SYS_socket,
        "a vm's syslog socket at start-up (AF_UNIX only)",
    ),
    (libc::SYS_connect, "a vm's syslog socket to /dev/log"),
    (libc::SYS_memfd_create, "guest memory and the boot image"),
    (libc::SYS_ftruncate, "size guest memory"),
    (libc::SYS_fallocate, "guest memory, where reserved up front"),
    (libc::SYS_sysinfo, "how much memory the host has"),
];

/// System calls refused to the parent, each with why it never needs it.
const PARENT_DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "file systems are the host's business"),
    (libc::SYS_umount2, "file systems are the host's business"),
    (libc::SYS_pivot_root, "file systems are the host's business"),
    (libc::SYS_chroot, "file systems are the host's business"),
    (libc::SYS_swapon, "swap is the host's business"),
    (libc::SYS_swapoff, "swap is the host's business"),
    (libc::SYS_ptrace, "no debugging of other processes"),
    (
        libc::SYS_process_vm_readv,
        "no access to other processes' memory",
    ),
    (
        libc::SYS_process_vm_writev,
        "no access to other processes' memory",
    ),
    (libc::SYS_kexec_load, "no new kernel"),
    (libc::SYS_kexec_file_load, "no new kernel"),
    (libc::SYS_init_module, "no kernel modules"),
    (libc::SYS_finit_module, "no kernel modules"),
    (libc::SYS_delete_module, "no kernel modules"),
    (libc::SYS_bpf, "no BPF programs"),
    (libc::SYS_perf_event_open, "no performance counters"),
    (libc::SYS_keyctl, "no kernel keyrings"),
    (libc::SYS_add_key, "no kernel keyrings"),
    (libc::SYS_request_key, "no kernel keyrings"),
    (libc::SYS_unshare, "no new namespaces"),
    (libc::SYS_setns, "no joining namespaces"),
    (libc::SYS_reboot, "the host is not ours to reboot"),
    (libc::SYS_settimeofday, "the host clock is not ours"),
    (libc::SYS_clock_settime, "the host clock is not ours"),
    (libc::SYS_clock_adjtime, "the host clock is not ours"),
    (libc::SYS_adjtimex, "the host clock is not ours"),
    (libc::SYS_acct, "no process accounting"),
    (libc::SYS_quotactl, "no disk quotas"),
    (libc::SYS_syslog, "no kernel log"),
    (libc::SYS_iopl, "no host I/O ports"),
    (libc::SYS_ioperm, "no host I/O ports"),
    (libc::SYS_open_by_handle_at, "no opening files by handle"),
    (libc::SYS_name_to_handle_at, "no file handles"),
    (libc::SYS_userfaultfd, "no user page fault handling"),
    (libc::SYS_fanotify_init, "no file system monitoring"),
    (libc::SYS_vhangup, "no terminal hang-ups"),
    (libc::SYS_personality, "no execution domains"),
];

/// Read-only (and executable) places a re-executed vmd needs: its shared
/// libraries and the loader's cache, process and CPU information.
const VMM_READ: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/etc/ld.so.cache",
    "/proc",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];

/// Devices vmm and the vm processes open read-write: only `/dev/null`
/// (the standard input of a vm process); `/dev/kvm` comes from the parent
/// as a descriptor.
const VMM_DEVICES: &[&str] = &["/dev/null"];

/// Loads a seccomp filter that allows `syscalls` and kills the process on
/// anything else.
fn allow_only(syscalls: &[(i64, &str)]) -> Result<(), SandboxError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        syscalls.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program)?;
    Ok(())
}

/// The `ioctl` request types (bits 8-15 of the request) a VMM uses: KVM's
/// (`0xAE`) and the terminal's (`'T'`: TCGETS, TCSETS, FIONBIO ...).
const IOCTL_TYPES: &[(u64, &str)] = &[(0xAE, "KVM"), (0x54, "terminal")];

/// The rules of one allowed system call: none (any arguments) but for
/// `ioctl`, whose request must be of one of [`IOCTL_TYPES`], and `socket`,
/// whose domain must be `AF_UNIX`.
fn rules_for(nr: i64) -> Result<Vec<SeccompRule>, SandboxError> {
    if nr == libc::SYS_socket {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )?;
        return Ok(vec![SeccompRule::new(vec![cond])?]);
    }
    if nr != libc::SYS_ioctl {
        return Ok(Vec::new());
    }
    IOCTL_TYPES
        .iter()
        .map(|&(ty, _)| {
            let cond = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xff00),
                ty << 8,
            )?;
            Ok(SeccompRule::new(vec![cond])?)
        })
        .collect()
}

/// Compiles an allow-list of `lists`: anything else raises `SIGSYS`.
fn trap_filter(lists: &[&[(i64, &str)]]) -> Result<BpfProgram, SandboxError> {
    let mut rules = BTreeMap::new();
    for &(nr, _) in lists.iter().copied().flatten() {
        rules.insert(nr, rules_for(nr)?);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// The `SIGSYS` handler: says which system call the filter refused, on
/// standard error, and ends the process. Async-signal-safe: it formats
/// into a stack buffer and calls `write` and `_exit` only (both allowed).
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; for a seccomp
    // trap its `_sigsys` member holds the system call number as an int at
    // byte 24 on x86_64 (after signo, errno, code and the call address).
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut msg = [0u8; 80];
    let head = b"vmd: seccomp: system call ";
    let tail = b" is not allowed\n";
    msg[..head.len()].copy_from_slice(head);
    let mut at = head.len();
    let mut digits = [0u8; 10];
    let mut n = nr.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        msg[at] = *d;
        at += 1;
    }
    msg[at..at + tail.len()].copy_from_slice(tail);
    at += tail.len();
    // SAFETY: writes `at` initialised bytes of `msg`, then ends the process
    // without running any more of its code.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), at);
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// Installs the `SIGSYS` handler that reports a refused system call on
/// standard error and exits with status 159. The confining functions call
/// it; a vm process also calls it first thing, since it runs under vmm's
/// filter from its exec on and exec resets signal handlers.
pub fn report_violations() -> Result<(), SandboxError> {
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C"
    // function of the SA_SIGINFO shape that only calls async-signal-safe
    // functions.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(SandboxError::Sigsys(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Loads a seccomp filter that refuses `syscalls` with `EPERM` and allows
/// the rest.
fn refuse(syscalls: &[(i64, &str)]) -> Result<(), SandboxError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        syscalls.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program)?;
    Ok(())
}

fn existing<'a>(paths: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    paths.iter().copied().filter(|p| Path::new(p).exists())
}

/// Confines vmm and, by inheritance, every vm process it starts: the file
/// system shrinks to `exe` (the daemon's binary, to re-execute),
/// [`VMM_READ`] and [`VMM_DEVICES`]; the system calls allowed are those
/// of [`VMM_SYSCALLS`] and [`VM_SYSCALLS`]. Returns whether Landlock is
/// enforced.
pub fn confine_vmm(exe: &Path) -> Result<bool, SandboxError> {
    let abi = ABI::V2;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(
            existing(VMM_READ),
            AccessFs::from_read(abi),
        ))?
        .add_rules(path_beneath_rules([exe], AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(
            existing(VMM_DEVICES),
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))?
        .restrict_self()?;
    let program = trap_filter(&[VMM_SYSCALLS, VM_SYSCALLS])?;
    report_violations()?;
    seccompiler::apply_filter(&program)?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

/// Confines a VM's process once the VM is built and before its guest
/// runs: every thread of the process, those already started included
/// (the RTC's timer), may only make the system calls of [`VM_SYSCALLS`].
/// Used by the vm processes and by `vm-run`.
pub fn confine_vm() -> Result<(), SandboxError> {
    let program = trap_filter(&[VM_SYSCALLS])?;
    report_violations()?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(())
}

/// Capabilities the parent keeps, each with why; it drops every other one
/// from its effective, permitted and bounding sets, so neither it nor any
/// process it starts can get them back.
const PARENT_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN: give a console to the user who starts a VM"),
    (1, "CAP_DAC_OVERRIDE: open users' images and disks as root"),
    (
        2,
        "CAP_DAC_READ_SEARCH: reach users' images through their directories",
    ),
    (3, "CAP_FOWNER: set a console's mode after giving it away"),
    (5, "CAP_KILL: signal children running as _vmd"),
    (
        6,
        "CAP_SETGID: children become _vmd (setresgid, initgroups)",
    ),
    (7, "CAP_SETUID: children become _vmd (setresuid)"),
    (
        12,
        "CAP_NET_ADMIN: taps and bridges for the VMs' interfaces",
    ),
];

/// Drops every capability but [`PARENT_CAPS`] (vmd's parent pledge:
/// files, ttys, processes, no more).
pub fn limit_parent_capabilities() -> Result<(), SandboxError> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep: u64 = PARENT_CAPS.iter().fold(0, |m, &(c, _)| m | 1 << c);
    for cap in 0..=last {
        if keep & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes integers only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(SandboxError::Caps(std::io::Error::last_os_error()));
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
        version: 0x2008_0522,
        pid: 0,
    };
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data words from the
    // valid, properly laid out structures above; it writes nothing back.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(SandboxError::Caps(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Confines the parent once its children run: only the capabilities of
/// [`PARENT_CAPS`], and the system calls of [`PARENT_DENIED`] refused with
/// `EPERM` (the parent opens files for users and creates consoles; it
/// never mounts, traces, loads modules or sets clocks).
pub fn confine_parent() -> Result<(), SandboxError> {
    limit_parent_capabilities()?;
    refuse(PARENT_DENIED)
}

/// Forbids every file-system access from now on (Landlock), where the
/// kernel supports Landlock; returns whether it is enforced.
pub fn deny_all_files() -> Result<bool, SandboxError> {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V2))?
        .create()?
        .restrict_self()?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

/// Confines the control process: no file access, and only the system
/// calls of [`CONTROL_SYSCALLS`].
pub fn confine_control() -> Result<(), SandboxError> {
    if !deny_all_files()? {
        tracing::debug!("control: Landlock is not available on this kernel");
    }
    allow_only(CONTROL_SYSCALLS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every entry of `lists` has a reason and that no system
    /// call appears twice across them.
    fn reasons_and_no_duplicates(lists: &[&[(i64, &str)]]) -> std::collections::BTreeSet<i64> {
        let mut seen = std::collections::BTreeSet::new();
        for &(nr, why) in lists.iter().copied().flatten() {
            assert!(why.len() > 3, "syscall {nr} has no reason");
            assert!(seen.insert(nr), "syscall {nr} listed twice");
        }
        seen
    }

    #[test]
    fn every_allowed_syscall_has_a_reason_and_appears_once() {
        let control = reasons_and_no_duplicates(&[CONTROL_SYSCALLS]);
        assert!(!control.contains(&libc::SYS_openat));
        assert!(!control.contains(&libc::SYS_execve));
        // vmm's list only adds to the vm's: together, no duplicates.
        let vmm = reasons_and_no_duplicates(&[VMM_SYSCALLS, VM_SYSCALLS]);
        let vm = reasons_and_no_duplicates(&[VM_SYSCALLS]);
        // What a running VM needs, and what it must not get back.
        for needed in [
            libc::SYS_ioctl,
            libc::SYS_futex,
            libc::SYS_tgkill,
            libc::SYS_rt_sigreturn,
            libc::SYS_exit_group,
        ] {
            assert!(vm.contains(&needed), "vm lacks {needed}");
        }
        for refused in [
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_rt_sigaction,
            libc::SYS_seccomp,
            libc::SYS_memfd_create,
        ] {
            assert!(!vm.contains(&refused), "vm may call {refused}");
        }
        for needed in [libc::SYS_execve, libc::SYS_wait4, libc::SYS_seccomp] {
            assert!(vmm.contains(&needed), "vmm lacks {needed}");
        }
        for refused in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_bind,
            libc::SYS_bpf,
        ] {
            assert!(!vmm.contains(&refused), "vmm may call {refused}");
        }
        reasons_and_no_duplicates(&[PARENT_DENIED]);
        for needed in [libc::SYS_ioctl, libc::SYS_execve, libc::SYS_clone] {
            assert!(!PARENT_DENIED.iter().any(|&(nr, _)| nr == needed));
        }
    }

    #[test]
    fn the_vm_and_vmm_filters_compile() {
        let vm = trap_filter(&[VM_SYSCALLS]).unwrap();
        assert!(vm.len() > VM_SYSCALLS.len());
        let vmm = trap_filter(&[VMM_SYSCALLS, VM_SYSCALLS]).unwrap();
        assert!(vmm.len() > vm.len());
        assert_eq!(rules_for(libc::SYS_ioctl).unwrap().len(), IOCTL_TYPES.len());
        assert_eq!(rules_for(libc::SYS_socket).unwrap().len(), 1);
        assert!(rules_for(libc::SYS_read).unwrap().is_empty());
    }

    /// Runs inside a child (see below): confines itself as vmm and reports
    /// what it can still open.
    #[test]
    fn landlock_probe_child() {
        if std::env::var_os("PRIVSEP_LANDLOCK_PROBE").is_none() {
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let enforced = confine_vmm(&exe).unwrap();
        let open = |p: &str| std::fs::File::open(p).is_ok();
        println!(
            "PROBE enforced={enforced} passwd={} null={} exe={}",
            open("/etc/passwd"),
            open("/dev/null"),
            open(exe.to_str().unwrap())
        );
        // A Unix socket (a vm's syslog) is allowed; an Internet one is not.
        // SAFETY: socket takes integers; the descriptor is closed at once.
        let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
        // SAFETY: closes the descriptor made above (or fails on -1).
        unsafe { libc::close(unix) };
        println!("PROBE unix-socket={}", unix >= 0);
        // A system call outside the list never runs: the process ends.
        if std::env::var("PRIVSEP_LANDLOCK_PROBE").as_deref() == Ok("inet") {
            // SAFETY: socket takes integers.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        } else {
            // SAFETY: unshare with flags 0 changes nothing even if allowed.
            unsafe { libc::unshare(0) };
        }
        println!("PROBE survived");
    }

    #[test]
    fn vmm_confinement_hides_the_file_system() {
        // Confining is irreversible: do it in a fresh process running the
        // probe above.
        for (what, nr) in [("unshare", libc::SYS_unshare), ("inet", libc::SYS_socket)] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sandbox::tests::landlock_probe_child",
                    "--nocapture",
                ])
                .env("PRIVSEP_LANDLOCK_PROBE", what)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(text.contains("PROBE unix-socket=true"), "{what}: {text}");
            assert!(!text.contains("survived"), "{what}: {text}");
            assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{err}");
            assert!(
                err.contains(&format!("seccomp: system call {nr} is not allowed")),
                "{what}: {err}"
            );
            if text.contains("enforced=true") {
                assert!(text.contains("passwd=false null=true exe=true"), "{text}");
            }
        }
    }

    /// Runs inside a child (see below): confines itself as a vm process,
    /// shows that what a VM does at run time still works, then makes the
    /// forbidden call named by `PRIVSEP_VM_PROBE`.
    #[test]
    fn vm_probe_child() {
        let Some(what) = std::env::var_os("PRIVSEP_VM_PROBE") else {
            return;
        };
        // A thread started before the filter, like the RTC's timer.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let early = std::thread::spawn(move || {
            rx.recv().unwrap();
            // SAFETY: getppid takes no arguments; it is not on the list.
            unsafe { libc::getppid() }
        });
        confine_vm().unwrap();
        let t = std::thread::spawn(|| 7).join().unwrap();
        // SAFETY: termios is plain data; all zeroes is a valid value.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS on stdout writes into the termios above (or fails
        // with ENOTTY); a terminal request is allowed.
        let r = unsafe { libc::ioctl(1, libc::TCGETS, &mut termios) };
        println!("PROBE alive thread={t} tcgets={}", r == 0 || r == -1);
        match what.to_str().unwrap() {
            "open" => {
                let _ = std::fs::File::open("/dev/null");
            }
            "ioctl" => {
                let mut size = 0u64;
                // SAFETY: BLKGETSIZE64 writes a u64 (or fails on a non-block
                // device); it is not a KVM or terminal request.
                unsafe { libc::ioctl(1, 0x8008_1272, &mut size) };
            }
            _ => {
                tx.send(()).unwrap();
                let _ = early.join();
            }
        }
        println!("PROBE survived");
    }

    #[test]
    fn the_vm_filter_refuses_what_a_running_vm_does_not_need() {
        for (what, nr) in [
            ("open", libc::SYS_openat),
            ("ioctl", libc::SYS_ioctl),
            ("early-thread", libc::SYS_getppid),
        ] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "sandbox::tests::vm_probe_child", "--nocapture"])
                .env("PRIVSEP_VM_PROBE", what)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                text.contains("PROBE alive thread=7 tcgets=true"),
                "{what}: {text} {err}"
            );
            assert!(!text.contains("survived"), "{what}: {text}");
            assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{what}: {err}");
            assert!(
                err.contains(&format!("seccomp: system call {nr} is not allowed")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn the_control_filter_compiles() {
        let rules: BTreeMap<i64, Vec<SeccompRule>> = CONTROL_SYSCALLS
            .iter()
            .map(|&(nr, _)| (nr, Vec::new()))
            .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .unwrap();
        let program: BpfProgram = filter.try_into().unwrap();
        assert!(program.len() > CONTROL_SYSCALLS.len());
    }
}
