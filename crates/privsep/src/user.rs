//! Dropping root: the unprivileged user of the control, vmm and vm
//! processes (vmd's `_vmd`, set up by `proc.c` before a child runs).

use nix::errno::Errno;
use nix::unistd::{self, Gid, Uid, User};

/// The unprivileged user the daemon's children run as.
pub const VMD_USER: &str = "_vmd";

/// The user to fall back to, with a warning, if [`VMD_USER`] is missing.
const FALLBACK_USER: &str = "nobody";

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Neither `_vmd` nor `nobody` exists
    #[error("unknown user {VMD_USER} (and no {FALLBACK_USER} to fall back to)")]
    NoUser,
    /// The user database could not be read
    #[error("could not look up user {0}")]
    Lookup(String, #[source] Errno),
    /// A set*id or setgroups call failed
    #[error("could not change to user {0}")]
    Change(String, #[source] Errno),
    /// Root could be regained after the change
    #[error("privileges could be regained after dropping them")]
    Regained,
    /// prctl(PR_SET_NO_NEW_PRIVS) failed
    #[error("could not set no_new_privs")]
    NoNewPrivs(#[source] Errno),
}

/// The unprivileged user: `_vmd`, else `nobody` (with a warning).
pub fn unprivileged_user() -> Result<User, UserError> {
    match User::from_name(VMD_USER).map_err(|e| UserError::Lookup(VMD_USER.into(), e))? {
        Some(u) => Ok(u),
        None => {
            tracing::warn!(
                "unknown user {VMD_USER}, running as {FALLBACK_USER}; run scripts/setup"
            );
            User::from_name(FALLBACK_USER)
                .map_err(|e| UserError::Lookup(FALLBACK_USER.into(), e))?
                .ok_or(UserError::NoUser)
        }
    }
}

/// Becomes `user` for good: supplementary groups (those of the user
/// database, so `_vmd` keeps e.g. the `kvm` group), gid, uid (real,
/// effective and saved, which also clears every capability), and then
/// no_new_privs so nothing exec'd later can gain privileges back.
pub fn drop_to(user: &User) -> Result<(), UserError> {
    let change = |e| UserError::Change(user.name.clone(), e);
    let name = std::ffi::CString::new(user.name.clone()).map_err(|_| change(Errno::EINVAL))?;
    unistd::initgroups(&name, user.gid).map_err(change)?;
    unistd::setresgid(user.gid, user.gid, user.gid).map_err(change)?;
    unistd::setresuid(user.uid, user.uid, user.uid).map_err(change)?;
    if user.uid.as_raw() != 0
        && (unistd::setuid(Uid::from_raw(0)).is_ok() || unistd::setgid(Gid::from_raw(0)).is_ok())
    {
        return Err(UserError::Regained);
    }
    set_no_new_privs()
}

/// Drops to the unprivileged user (see [`unprivileged_user`], [`drop_to`]).
/// Returns the user now in effect.
pub fn drop_privileges() -> Result<User, UserError> {
    let user = unprivileged_user()?;
    drop_to(&user)?;
    Ok(user)
}

/// Sets `PR_SET_NO_NEW_PRIVS`: no exec of this process or its children
/// can gain privileges (setuid bits, file capabilities).
pub fn set_no_new_privs() -> Result<(), UserError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only
    // and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(UserError::NoNewPrivs(Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unprivileged_user_is_not_root() {
        let u = unprivileged_user().unwrap();
        assert_ne!(u.uid.as_raw(), 0);
        assert!(u.name == VMD_USER || u.name == FALLBACK_USER);
    }
}
