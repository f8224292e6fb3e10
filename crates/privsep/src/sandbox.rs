//! Confinement of the daemon's children, our pledge(2) and unveil(2):
//! a seccomp-bpf allow-list per role and Landlock file-system rules (what
//! vmd's `proc.c` and each process's pledge promises do on OpenBSD).
//!
//! The control process gets both: it only relays packets between sockets
//! it already holds, so it may call a handful of system calls and open no
//! file at all. vmm and the vm processes it starts (filters and rulesets
//! are inherited across exec) may run a VM: their Landlock ruleset allows
//! executing the daemon's binary with its libraries, nothing else (even
//! `/dev/kvm` comes from the parent as a descriptor); their seccomp filter refuses, with `EPERM`,
//! the system calls no VMM needs (mounts, modules, ptrace, bpf, namespaces,
//! clocks, keyrings ...).

use std::collections::BTreeMap;

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

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

/// System calls refused to vmm and the vm processes, each with why no
/// VMM needs it.
const VMM_DENIED: &[(i64, &str)] = &[
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
/// [`VMM_READ`] and [`VMM_DEVICES`]; the system calls of [`VMM_DENIED`]
/// fail with `EPERM`. Returns whether Landlock is enforced.
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
    refuse(VMM_DENIED)?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
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
/// [`PARENT_CAPS`], and the system calls of [`VMM_DENIED`] refused with
/// `EPERM` (the parent opens files for users and creates consoles; it
/// never mounts, traces, loads modules or sets clocks).
pub fn confine_parent() -> Result<(), SandboxError> {
    limit_parent_capabilities()?;
    refuse(VMM_DENIED)
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

    #[test]
    fn every_allowed_syscall_has_a_reason_and_appears_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (nr, why) in CONTROL_SYSCALLS {
            assert!(!why.is_empty());
            assert!(seen.insert(nr), "syscall {nr} listed twice");
        }
        assert!(!seen.contains(&libc::SYS_openat));
        assert!(!seen.contains(&libc::SYS_execve));
        let mut denied = std::collections::BTreeSet::new();
        for (nr, why) in VMM_DENIED {
            assert!(!why.is_empty());
            assert!(denied.insert(nr), "syscall {nr} denied twice");
        }
        // What a VMM cannot do without.
        for needed in [
            libc::SYS_ioctl,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_mmap,
        ] {
            assert!(!denied.contains(&needed));
        }
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
        // A denied system call fails with EPERM instead of running.
        // SAFETY: unshare with flags 0 changes nothing even if allowed.
        let r = unsafe { libc::unshare(0) };
        println!(
            "PROBE unshare={}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0) * (r == -1) as i32
        );
    }

    #[test]
    fn vmm_confinement_hides_the_file_system() {
        // Confining is irreversible: do it in a fresh process running the
        // probe above.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sandbox::tests::landlock_probe_child",
                "--nocapture",
            ])
            .env("PRIVSEP_LANDLOCK_PROBE", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("PROBE unshare={}", libc::EPERM)),
            "{text}"
        );
        if text.contains("enforced=true") {
            assert!(text.contains("passwd=false null=true exe=true"), "{text}");
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
