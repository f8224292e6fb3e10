//! Confinement of the daemon's children, our pledge(2) and unveil(2):
//! a seccomp-bpf allow-list per role and Landlock file-system rules (what
//! vmd's `proc.c` and each process's pledge promises do on OpenBSD).
//!
//! The control process gets both: it only relays packets between sockets
//! it already holds, so it may call a handful of system calls and open no
//! file at all. vmm and vm are confined by their unprivileged user and
//! no_new_privs; their filters must cover everything the VM runtime does
//! (filters are inherited across exec), so they come with the runtime's
//! own list.

use std::collections::BTreeMap;

use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
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
