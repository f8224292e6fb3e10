//! A VM's console: a pseudo-terminal the parent creates per VM, owned by
//! the user who started it (vmd's `vm_opentty` / `vm_closetty`). The
//! master goes to the `vm` process (the guest's COM1); users attach to
//! the slave (`/dev/pts/N`) with `vmctl console`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::{fchmod, Mode};
use nix::sys::termios;
use nix::unistd::{fchown, Gid, Group, Uid};

/// Why a console could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// No pseudo-terminal could be allocated
    #[error("could not allocate a pseudo-terminal")]
    Open(#[source] Errno),
    /// The slave's owner or mode could not be set
    #[error("could not set owner and mode of {0}")]
    Owner(PathBuf, #[source] Errno),
}

/// A VM's console pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    /// Held open by the parent so the master never sees a hang-up while
    /// no console is attached (the guest's output keeps flowing).
    _slave: OwnedFd,
    path: PathBuf,
}

/// The group and mode of a console (vmd's rule): the VM owner's group
/// with 0660 if the VM has one, else group `tty` with 0620, else root's
/// group with 0600.
pub fn console_mode(owner_gid: Option<u32>, tty_gid: Option<u32>) -> (u32, u32) {
    match (owner_gid, tty_gid) {
        (Some(gid), _) => (gid, 0o660),
        (None, Some(gid)) => (gid, 0o620),
        (None, None) => (0, 0o600),
    }
}

impl Pty {
    /// Allocates a console owned by `uid`, with group and mode per
    /// [`console_mode`]; the slave is in raw mode, as a serial line.
    pub fn open(uid: u32, owner_gid: Option<u32>) -> Result<Pty, TtyError> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(TtyError::Open)?;
        grantpt(&master).map_err(TtyError::Open)?;
        unlockpt(&master).map_err(TtyError::Open)?;
        let path = PathBuf::from(ptsname_r(&master).map_err(TtyError::Open)?);
        let slave = open(
            &path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(TtyError::Open)?;
        if let Ok(mut t) = termios::tcgetattr(&slave) {
            termios::cfmakeraw(&mut t);
            let _ = termios::tcsetattr(&slave, termios::SetArg::TCSANOW, &t);
        }
        let tty_gid = Group::from_name("tty")
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        let (gid, mode) = console_mode(owner_gid, tty_gid);
        fchown(&slave, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| TtyError::Owner(path.clone(), e))?;
        fchmod(&slave, Mode::from_bits_truncate(mode))
            .map_err(|e| TtyError::Owner(path.clone(), e))?;
        // SAFETY: into_raw_fd hands over the descriptor posix_openpt
        // returned; nothing else owns it.
        let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
        Ok(Pty {
            master,
            _slave: slave,
            path,
        })
    }

    /// The slave's path (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master, to hand to the `vm` process.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The master's descriptor number (for logs).
    pub fn raw(&self) -> i32 {
        self.master.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn console_group_and_mode_follow_vmd() {
        assert_eq!(console_mode(Some(100), Some(5)), (100, 0o660));
        assert_eq!(console_mode(None, Some(5)), (5, 0o620));
        assert_eq!(console_mode(None, None), (0, 0o600));
    }

    #[test]
    fn a_console_belongs_to_its_user() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let pty = Pty::open(4242, None).unwrap();
        let meta = std::fs::metadata(pty.path()).unwrap();
        assert_eq!(meta.uid(), 4242);
        assert_eq!(meta.permissions().mode() & 0o777, 0o620);
        assert!(pty.path().starts_with("/dev/pts"));
        let path = pty.path().to_path_buf();
        drop(pty);
        assert!(!path.exists() || std::fs::metadata(&path).unwrap().uid() != 4242);
    }
}
