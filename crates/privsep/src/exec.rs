//! Starting a child process in one of the daemon's roles: fork and exec of
//! the daemon's own binary with a hidden role flag, like vmd's
//! `proc_exec` with `-P` (`proc.c`). A child never runs code of the
//! parent's address space: exec comes right after fork.
//!
//! The child finds its channel to the parent at descriptor
//! [`CHANNEL_FD`], and any extra descriptors the parent hands it at
//! [`FIRST_EXTRA_FD`] onwards, in order.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::unistd::Pid;

use crate::channel::{Channel, ChannelError};

/// Where a child finds its channel to the process that started it.
pub const CHANNEL_FD: RawFd = 3;
/// Where a child finds the first extra descriptor it was given.
pub const FIRST_EXTRA_FD: RawFd = 4;
/// Descriptors are moved above this number before the fork, so moving
/// them into place in the child never overwrites one another.
const STAGING_FD: RawFd = 100;

/// A process role, named as on the command line (`-P name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The control socket process.
    Control,
    /// The VM spawner.
    Vmm,
    /// One VM.
    Vm,
}

impl Role {
    /// The name given to `-P`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Vmm => "vmm",
            Role::Vm => "vm",
        }
    }

    /// Parses a `-P` argument.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "control" => Some(Role::Control),
            "vmm" => Some(Role::Vmm),
            "vm" => Some(Role::Vm),
            _ => None,
        }
    }
}

/// Why a child could not be started or set up.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The channel to the child could not be created
    #[error("could not create the channel")]
    Channel(#[from] ChannelError),
    /// A descriptor could not be duplicated
    #[error("could not duplicate a descriptor")]
    Dup(#[source] Errno),
    /// The daemon's binary could not be executed
    #[error("could not execute {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// The inherited channel descriptor is missing or not a socket
    #[error("descriptor {0} is not the channel to the parent")]
    NoChannel(RawFd),
}

/// A started child.
#[derive(Debug)]
pub struct Child {
    /// Its process id.
    pub pid: Pid,
    /// The channel to it.
    pub channel: Channel,
}

/// The binary to re-execute: this very program, whatever its path.
fn self_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// Starts the daemon's binary in `role` with `args` after `-P role`,
/// giving it a channel and `extra` descriptors. Standard input is
/// `/dev/null`; standard output and error are shared with the caller.
pub fn spawn(role: Role, args: &[OsString], extra: &[BorrowedFd<'_>]) -> Result<Child, ExecError> {
    let (ours, theirs) = Channel::pair()?;
    // Stage every descriptor above STAGING_FD (close-on-exec), so the
    // dup2 calls in the child cannot clobber one another.
    let staged_channel = stage(theirs.as_fd())?;
    let staged_extra = extra
        .iter()
        .map(|fd| stage(fd.as_fd()))
        .collect::<Result<Vec<_>, _>>()?;
    let moves: Vec<(RawFd, RawFd)> = std::iter::once((staged_channel.as_raw_fd(), CHANNEL_FD))
        .chain(
            staged_extra
                .iter()
                .zip(FIRST_EXTRA_FD..)
                .map(|(fd, to)| (fd.as_raw_fd(), to)),
        )
        .collect();

    let exe = self_exe();
    let mut cmd = Command::new(&exe);
    cmd.arg0(format!("vmd: {}", role.as_str()))
        .arg("-P")
        .arg(role.as_str())
        .args(args)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &(from, to) in &moves {
                // dup2 leaves the copy without close-on-exec.
                if libc::dup2(from, to) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| ExecError::Spawn(exe, e))?;
    drop(theirs);
    Ok(Child {
        pid: Pid::from_raw(child.id() as i32),
        channel: ours,
    })
}

fn stage(fd: BorrowedFd<'_>) -> Result<OwnedFd, ExecError> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(STAGING_FD)).map_err(ExecError::Dup)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes ownership of a descriptor inherited at a fixed number, checking
/// that it is open; marks it close-on-exec so it does not leak further.
pub fn inherited(fd: RawFd) -> Result<OwnedFd, ExecError> {
    use nix::fcntl::FdFlag;
    // SAFETY: fd is only borrowed for the F_GETFD probe; a closed number
    // yields EBADF and no ownership is taken.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|_| ExecError::NoChannel(fd))?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(ExecError::Dup)?;
    // SAFETY: the descriptor is open (checked above) and was handed to
    // this process by its parent for this purpose only; nothing else in
    // this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The channel to the parent, inherited at [`CHANNEL_FD`].
pub fn parent_channel() -> Result<Channel, ExecError> {
    let fd = inherited(CHANNEL_FD)?;
    let st = nix::sys::stat::fstat(&fd).map_err(|_| ExecError::NoChannel(CHANNEL_FD))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(ExecError::NoChannel(CHANNEL_FD));
    }
    Ok(Channel::new(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_their_own_names() {
        for role in [Role::Control, Role::Vmm, Role::Vm] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("parent"), None);
    }

    #[test]
    fn inherited_refuses_a_closed_descriptor() {
        assert!(matches!(inherited(987), Err(ExecError::NoChannel(987))));
    }
}
