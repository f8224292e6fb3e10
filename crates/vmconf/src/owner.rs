//! Owners of VMs and of the control socket: `user[:group]`, `:group` or a
//! uid, resolved with the password and group databases (parse.y's
//! `owner_id`).

use thiserror::Error;

use crate::types::Owner;

/// Why an owner could not be resolved.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OwnerError {
    /// No such user.
    #[error("failed to get user: {0}")]
    User(String),
    /// No such group.
    #[error("failed to get group: {0}")]
    Group(String),
    /// A numeric uid out of range.
    #[error("invalid uid: {0}")]
    Uid(i64),
}

/// A numeric owner: just a uid (its name looked up for display).
pub fn owner_from_uid(uid: i64) -> Result<Owner, OwnerError> {
    let id = u32::try_from(uid)
        .ok()
        .filter(|&u| u != u32::MAX)
        .ok_or(OwnerError::Uid(uid))?;
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| id.to_string());
    Ok(Owner {
        uid: Some(id),
        gid: None,
        user: Some(name),
        group: None,
    })
}

/// `user[:group]`, `:group` or `user:` resolved with the password and group
/// databases.
pub fn owner_from_names(text: &str) -> Result<Owner, OwnerError> {
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let mut owner = Owner::default();
    if !user.is_empty() {
        let pw = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| OwnerError::User(user.to_string()))?;
        owner.uid = Some(pw.uid.as_raw());
        owner.user = Some(user.to_string());
    }
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        let gr = nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .ok_or_else(|| OwnerError::Group(g.to_string()))?;
        owner.gid = Some(gr.gid.as_raw());
        owner.group = Some(g.to_string());
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_through_the_databases() {
        let root = owner_from_names("root").unwrap();
        assert_eq!((root.uid, root.gid), (Some(0), None));
        let g = owner_from_names(":root").unwrap();
        assert_eq!((g.uid, g.gid), (None, Some(0)));
        let both = owner_from_names("root:root").unwrap();
        assert_eq!((both.uid, both.gid), (Some(0), Some(0)));
        assert_eq!(
            owner_from_names("no-such-user-xyz"),
            Err(OwnerError::User("no-such-user-xyz".into()))
        );
        assert_eq!(
            owner_from_names("root:no-such-group-xyz"),
            Err(OwnerError::Group("no-such-group-xyz".into()))
        );
        assert_eq!(owner_from_uid(0).unwrap().user.as_deref(), Some("root"));
        assert_eq!(owner_from_uid(-1), Err(OwnerError::Uid(-1)));
    }
}
