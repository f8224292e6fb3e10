//! Who may act on a VM and which files a user may hand it (vmd.c
//! `vm_checkperm`, `vm_checkinsflag`, `vm_checkaccess` and the file opening
//! of config.c's `config_setvm`).

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vmconf::Owner;

use super::{Error, Vm};

/// A requester's identity: the kernel's word for who is asking (the daemon
/// fills it from `SO_PEERCRED` and the group database), never what a client
/// claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (may include the primary one).
    pub groups: Vec<u32>,
}

impl Creds {
    /// Root: no restrictions.
    pub fn root() -> Self {
        Creds {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// A peer known by uid and primary gid (`SO_PEERCRED`), with its
    /// supplementary groups from the group database (`getgrouplist`).
    /// An unknown user keeps only its primary group.
    pub fn lookup(uid: u32, gid: u32) -> Self {
        let mut groups = vec![gid];
        if let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) {
            if let Ok(name) = std::ffi::CString::new(user.name) {
                if let Ok(list) = nix::unistd::getgrouplist(&name, gid.into()) {
                    groups = list.into_iter().map(|g| g.as_raw()).collect();
                }
            }
        }
        Creds { uid, gid, groups }
    }

    /// A user known only by uid (the owner a config VM starts as): its
    /// primary group from the password database, then as [`Creds::lookup`].
    /// An unknown uid gets no group at all.
    pub fn for_uid(uid: u32) -> Self {
        if uid == 0 {
            return Creds::root();
        }
        match nix::unistd::User::from_uid(uid.into()) {
            Ok(Some(user)) => Creds::lookup(uid, user.gid.as_raw()),
            _ => Creds {
                uid,
                gid: u32::MAX,
                groups: Vec::new(),
            },
        }
    }

    /// Root?
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Is `gid` the primary or a supplementary group?
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// May `creds` act on a VM owned by `owner` (vmd's `vm_checkperm`)?
///
/// Root may do anything. Otherwise the user must be the owner — for a
/// running `vm`, the user who started it; with no `vm`, the owner's uid —
/// or be in the owner's group (primary or supplementary). No owner: only
/// root.
pub fn check_perm(vm: Option<&Vm>, owner: Option<&Owner>, creds: &Creds) -> bool {
    if creds.is_root() {
        return true;
    }
    let Some(owner) = owner else {
        return false;
    };
    let user_matches = match vm {
        Some(vm) if vm.state.running => vm.uid == creds.uid,
        _ => owner.uid == Some(creds.uid),
    };
    if user_matches {
        return true;
    }
    owner.gid.is_some_and(|gid| creds.in_group(gid))
}

/// The access a VM needs to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Kernel, initrd, ISO image.
    Read,
    /// Disk images.
    ReadWrite,
}

impl Access {
    /// The permission bits needed for the "other" class; shift left by 3
    /// for the group, by 6 for the owner.
    fn other_bits(self) -> u32 {
        match self {
            Access::Read => 0o4,
            Access::ReadWrite => 0o6,
        }
    }
}

/// Does `meta` (a regular file's status) grant `creds` the `access`
/// (vmd's `vm_checkaccess`)? Root passes; the other, owner and group
/// permission classes are tried in that order, as vmd does: a class that
/// grants the bits lets the user in.
fn mode_allows(meta: &Metadata, creds: &Creds, access: Access) -> bool {
    if creds.is_root() {
        return true;
    }
    let mode = meta.mode();
    let bits = access.other_bits();
    if mode & bits == bits {
        return true;
    }
    if creds.uid == meta.uid() && mode & (bits << 6) == bits << 6 {
        return true;
    }
    mode & (bits << 3) == bits << 3 && creds.in_group(meta.gid())
}

/// May `creds` use the file at `path` (followed if a symlink) with
/// `access`? It must be a regular file, and its mode must grant the access
/// to the user as [`check_access_file`] describes.
pub fn check_access(path: &Path, creds: &Creds, access: Access) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|_| Error::AccessDenied(path.to_path_buf()))?;
    check_meta(&meta, path, creds, access)
}

/// Like [`check_access`], on a file the daemon already opened (vmd checks
/// the descriptor it will pass on, so the file cannot change in between).
pub fn check_access_file(
    file: &File,
    path: &Path,
    creds: &Creds,
    access: Access,
) -> Result<(), Error> {
    let meta = file
        .metadata()
        .map_err(|_| Error::AccessDenied(path.to_path_buf()))?;
    check_meta(&meta, path, creds, access)
}

fn check_meta(meta: &Metadata, path: &Path, creds: &Creds, access: Access) -> Result<(), Error> {
    if !meta.is_file() {
        return Err(Error::NotRegularFile(path.to_path_buf()));
    }
    if mode_allows(meta, creds, access) {
        Ok(())
    } else {
        Err(Error::AccessDenied(path.to_path_buf()))
    }
}

/// What a file is to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// Kernel or BIOS image.
    Kernel,
    /// Initial ramdisk.
    Initrd,
    /// Disk image number N.
    Disk(usize),
    /// ISO image.
    Cdrom,
}

/// One file the daemon must open for a VM it starts, and against whom to
/// check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Its role.
    pub role: FileRole,
    /// Its path.
    pub path: PathBuf,
    /// Read, or read and write (disks).
    pub access: Access,
    /// Check the mode against this user (the starter of an instance that
    /// chose the file itself); `None`: only check it is a regular file.
    pub check_user: Option<u32>,
}

impl FileCheck {
    /// Open the file as the daemon (root) and check the open file: a
    /// regular file, and readable (writable for disks) by
    /// [`FileCheck::check_user`] if set. The errors are vmd's: a missing
    /// disk is `VMD_DISK_MISSING`, a missing ISO `VMD_CDROM_MISSING`, an ISO
    /// that is no regular file `VMD_CDROM_INVALID`, an access refused
    /// `EPERM`.
    pub fn open(&self) -> Result<File, Error> {
        let creds = self.check_user.map(Creds::for_uid);
        self.open_as(creds.as_ref())
    }

    /// [`FileCheck::open`] with the user's credentials given.
    pub fn open_as(&self, creds: Option<&Creds>) -> Result<File, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(self.access == Access::ReadWrite)
            // Never block on a FIFO or a device: those are refused below.
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|_| self.missing())?;
        let meta = file.metadata().map_err(|_| self.missing())?;
        if !meta.is_file() {
            return Err(match self.role {
                FileRole::Cdrom => Error::CdromInvalid(self.path.clone()),
                _ => Error::NotRegularFile(self.path.clone()),
            });
        }
        if let Some(creds) = creds {
            if !mode_allows(&meta, creds, self.access) {
                return Err(Error::AccessDenied(self.path.clone()));
            }
        }
        Ok(file)
    }

    fn missing(&self) -> Error {
        let p = self.path.clone();
        match self.role {
            FileRole::Kernel => Error::KernelMissing(p),
            FileRole::Initrd => Error::InitrdMissing(p),
            FileRole::Disk(_) => Error::DiskMissing(p),
            FileRole::Cdrom => Error::CdromMissing(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn owner(uid: Option<u32>, gid: Option<u32>) -> Owner {
        Owner {
            uid,
            gid,
            ..Owner::default()
        }
    }

    /// A file in `dir` owned by uid:gid with `mode` (the tests run as root).
    fn file(dir: &Path, name: &str, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"data").unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn registered(running: bool, starter: u32, own: Owner) -> Vm {
        let mut r = reg();
        let mut c = conf("vm");
        c.owner = Some(own);
        let id = add_config(&mut r, c);
        let mut vm = r.by_id(id).unwrap().clone();
        vm.state.running = running;
        vm.uid = starter;
        vm
    }

    #[test]
    fn root_may_act_on_any_vm() {
        assert!(check_perm(None, None, &root()));
    }

    #[test]
    fn no_owner_means_root_only() {
        assert!(!check_perm(None, None, &user(1000)));
    }

    #[test]
    fn owner_uid_may_act_on_stopped_vm() {
        let vm = registered(false, 0, owner(Some(1000), None));
        assert!(check_perm(Some(&vm), vm.conf.owner.as_ref(), &user(1000)));
        assert!(!check_perm(Some(&vm), vm.conf.owner.as_ref(), &user(1001)));
    }

    #[test]
    fn running_vm_belongs_to_its_starter_not_the_configured_uid() {
        let vm = registered(true, 1001, owner(Some(1000), None));
        assert!(check_perm(Some(&vm), vm.conf.owner.as_ref(), &user(1001)));
        assert!(!check_perm(Some(&vm), vm.conf.owner.as_ref(), &user(1000)));
    }

    #[test]
    fn owner_group_as_primary_group_grants() {
        let o = owner(None, Some(500));
        let c = Creds {
            uid: 1000,
            gid: 500,
            groups: vec![],
        };
        assert!(check_perm(None, Some(&o), &c));
    }

    #[test]
    fn owner_group_as_supplementary_group_grants() {
        let o = owner(Some(7), Some(500));
        let c = Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 500],
        };
        assert!(check_perm(None, Some(&o), &c));
        assert!(!check_perm(None, Some(&o), &user(1000)));
    }

    #[test]
    fn creds_of_nobody_come_from_the_user_database() {
        let c = Creds::for_uid(65534);
        assert_eq!(c.uid, 65534);
        assert_eq!(c.gid, 65534);
        assert!(c.in_group(65534));
        assert!(!c.in_group(0));
    }

    #[test]
    fn creds_of_unknown_uid_have_no_groups() {
        let c = Creds::for_uid(3_999_999);
        assert!(c.groups.is_empty());
        assert!(!c.in_group(0));
    }

    #[test]
    fn lookup_adds_supplementary_groups_of_root() {
        let c = Creds::lookup(0, 0);
        assert!(c.is_root());
        assert!(c.groups.contains(&0));
    }

    /// A user and a group created in the system databases for one test,
    /// deleted when dropped.
    struct TempUser {
        name: String,
    }

    impl TempUser {
        fn new(tag: &str) -> Self {
            let name = format!("vmdreg{tag}{}", std::process::id());
            let run = |cmd: &str, args: &[&str]| {
                let ok = std::process::Command::new(cmd)
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "{cmd} {args:?} failed");
            };
            run("groupadd", &[&name]);
            run(
                "useradd",
                &["-M", "-N", "-g", "nogroup", "-G", &name, &name],
            );
            TempUser { name }
        }

        fn uid(&self) -> u32 {
            nix::unistd::User::from_name(&self.name)
                .unwrap()
                .unwrap()
                .uid
                .as_raw()
        }

        fn gid(&self) -> u32 {
            nix::unistd::Group::from_name(&self.name)
                .unwrap()
                .unwrap()
                .gid
                .as_raw()
        }
    }

    impl Drop for TempUser {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel")
                .arg(&self.name)
                .status();
            let _ = std::process::Command::new("groupdel")
                .arg(&self.name)
                .status();
        }
    }

    #[test]
    fn supplementary_group_from_the_group_database_grants_access() {
        let u = TempUser::new("g");
        let creds = Creds::for_uid(u.uid());
        assert!(creds.in_group(u.gid()), "{creds:?}");
        let dir = tempfile::tempdir().unwrap();
        let shared = file(dir.path(), "shared", 65534, u.gid(), 0o660);
        let private = file(dir.path(), "private", 0, 0, 0o660);
        assert!(check_access(&shared, &creds, Access::ReadWrite).is_ok());
        assert!(check_access(&private, &creds, Access::Read).is_err());
        let owner = owner(None, Some(u.gid()));
        assert!(check_perm(None, Some(&owner), &creds));
    }

    #[test]
    fn access_refused_for_other_users_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 65534, 65534, 0o600);
        assert_eq!(
            check_access(&p, &user(1000), Access::Read),
            Err(Error::AccessDenied(p.clone()))
        );
    }

    #[test]
    fn access_granted_to_file_owner() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 1000, 1000, 0o600);
        assert!(check_access(&p, &user(1000), Access::ReadWrite).is_ok());
    }

    #[test]
    fn owner_without_write_bit_cannot_use_disk_read_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 1000, 1000, 0o400);
        assert!(check_access(&p, &user(1000), Access::Read).is_ok());
        assert!(check_access(&p, &user(1000), Access::ReadWrite).is_err());
    }

    #[test]
    fn world_readable_file_is_readable_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "iso", 65534, 65534, 0o644);
        assert!(check_access(&p, &user(1000), Access::Read).is_ok());
        assert!(check_access(&p, &user(1000), Access::ReadWrite).is_err());
    }

    #[test]
    fn group_bits_grant_to_supplementary_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 65534, 4242, 0o660);
        let member = Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 4242],
        };
        assert!(check_access(&p, &member, Access::ReadWrite).is_ok());
        assert!(check_access(&p, &user(1000), Access::ReadWrite).is_err());
    }

    #[test]
    fn root_passes_any_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 65534, 65534, 0o000);
        assert!(check_access(&p, &root(), Access::ReadWrite).is_ok());
    }

    #[test]
    fn directories_are_refused_even_for_root() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check_access(dir.path(), &root(), Access::Read),
            Err(Error::NotRegularFile(dir.path().to_path_buf()))
        );
    }

    #[test]
    fn open_missing_disk_is_vmd_disk_missing() {
        let fc = FileCheck {
            role: FileRole::Disk(0),
            path: "/nonexistent/disk.img".into(),
            access: Access::ReadWrite,
            check_user: None,
        };
        let err = fc.open().unwrap_err();
        assert_eq!(err.code(), proto::codes::VMD_DISK_MISSING);
    }

    #[test]
    fn open_cdrom_that_is_a_directory_is_cdrom_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let fc = FileCheck {
            role: FileRole::Cdrom,
            path: dir.path().to_path_buf(),
            access: Access::Read,
            check_user: None,
        };
        assert_eq!(
            fc.open().unwrap_err().code(),
            proto::codes::VMD_CDROM_INVALID
        );
    }

    #[test]
    fn open_checks_the_user_on_the_opened_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "disk", 65534, 65534, 0o600);
        let mut fc = FileCheck {
            role: FileRole::Disk(0),
            path: p.clone(),
            access: Access::ReadWrite,
            check_user: Some(1000),
        };
        assert_eq!(
            fc.open_as(Some(&user(1000))).unwrap_err().code(),
            libc::EPERM
        );
        // Checked as nobody (uid 65534, looked up for real), the owner.
        fc.check_user = Some(65534);
        assert!(fc.open().is_ok());
    }
}
