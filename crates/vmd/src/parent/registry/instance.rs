//! Instances of a template VM (`vmctl start -t parent`, `vm x instance y`):
//! what they inherit and what `allow instance` lets them change (vmd.c
//! `vm_instance` and `vm_checkinsflag`).
//!
//! Inherited: vCPUs, memory, boot image (with initrd, command line and boot
//! device), ISO image, owner, the parent's interfaces beyond those the
//! instance lists (their switch, group, rdomain and flags, but a fresh MAC
//! and the next free tap). Never inherited: disks, MAC addresses, tap
//! names. vmd compares MACs the wrong way round and copies tap names it
//! then refuses as reused; here an instance reusing a parent's MAC or tap
//! name is refused and inherited interfaces get their own. Two more vmd
//! slips not reproduced: it passes on the instance owner's gid as its uid,
//! and it clears the instance flag before checking that the request named
//! anything, so a bare `vmctl start -t parent name` fails there.

use vmconf::{IfConf, InstancePerms, Owner, VmConf};

use super::perm::check_perm;
use super::{CheckAccess, Creds, Error, Registry, VmId, MIB};

/// May `creds` set an option guarded by `flag` (vmd's `vm_checkinsflag`)?
/// Root may set anything.
fn allowed(perms: &InstancePerms, creds: &Creds, flag: fn(&InstancePerms) -> bool) -> bool {
    creds.is_root() || flag(perms)
}

/// A tap name that names one device (not the generic `tap`: next free).
fn specific_tap(name: &Option<String>) -> Option<&str> {
    name.as_deref().filter(|n| *n != "tap")
}

/// Resolve `conf` as an instance of `conf.instance_of`, filling in what it
/// inherits. `None` if it is no instance; else the parent's id and the
/// files the instance chose itself (to be checked against its starter).
pub(super) fn inherit(
    reg: &Registry,
    conf: &mut VmConf,
    creds: &Creds,
) -> Result<Option<(VmId, CheckAccess)>, Error> {
    let Some(parent_name) = conf.instance_of.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let parent = reg.by_name(parent_name).ok_or(Error::InvalidTemplate)?;
    let p = &parent.conf;
    let perms = &p.allow_instance;

    if !check_perm(None, p.instance_owner.as_ref(), creds) {
        // vmd answers ENAMETOOLONG here, and so do we.
        return Err(Error::NoInstancePermission);
    }
    if reg.by_name(&conf.name).is_some() {
        return Err(Error::InstanceExists);
    }
    let mut access = CheckAccess::default();

    // vCPUs
    let cpus = *conf.cpus.get_or_insert(p.cpus.unwrap_or(1));
    if !allowed(perms, creds, |f| f.cpus) && Some(cpus) != p.cpus {
        return Err(Error::InstanceOption("cpus"));
    }

    // memory, compared in whole MiB as registered
    let parent_mem = p.memory.unwrap_or(vmconf::VM_DEFAULT_MEMORY);
    let mem = *conf.memory.get_or_insert(parent_mem);
    if !allowed(perms, creds, |f| f.memory) && mem / MIB != parent_mem / MIB {
        return Err(Error::InstanceOption("memory"));
    }

    // disks: never inherited
    if !conf.disks.is_empty() {
        if !allowed(perms, creds, |f| f.disk) {
            return Err(Error::InstanceOption("disks"));
        }
        if let Some(d) = conf
            .disks
            .iter()
            .find(|d| p.disks.iter().any(|pd| pd.path == d.path))
        {
            return Err(Error::DiskReused(d.path.clone()));
        }
        access.disk = true;
    }

    // interfaces
    let own = conf.interfaces.len();
    if own > 0 && !allowed(perms, creds, |f| f.interface) && own != p.interfaces.len() {
        return Err(Error::InstanceOption("interfaces"));
    }
    for nic in &conf.interfaces {
        if let Some(mac) = nic.lladdr.filter(|m| *m != [0; 6]) {
            if p.interfaces.iter().any(|pn| pn.lladdr == Some(mac)) {
                return Err(Error::LladdrReused);
            }
        }
        if let Some(name) = specific_tap(&nic.name) {
            if p.interfaces
                .iter()
                .any(|pn| pn.name.as_deref() == Some(name))
            {
                return Err(Error::InterfaceReused(name.to_string()));
            }
        }
    }
    for pn in p.interfaces.iter().skip(own) {
        conf.interfaces.push(IfConf {
            name: None,
            lladdr: None,
            ..pn.clone()
        });
    }
    conf.min_interfaces = 0;

    // boot image, initrd and command line go together under `boot`
    if conf.boot.is_some() || conf.initrd.is_some() || conf.cmdline.is_some() {
        if !allowed(perms, creds, |f| f.boot) {
            return Err(Error::InstanceOption("boot image"));
        }
        access.kernel = true;
    }
    if conf.boot.is_none() {
        conf.boot.clone_from(&p.boot);
    }
    if conf.initrd.is_none() {
        conf.initrd.clone_from(&p.initrd);
    }
    if conf.cmdline.is_none() {
        conf.cmdline.clone_from(&p.cmdline);
    }
    if conf.boot_device.is_none() {
        conf.boot_device = p.boot_device;
    }

    // cdrom
    if conf.cdrom.is_some() {
        if !allowed(perms, creds, |f| f.cdrom) {
            return Err(Error::InstanceOption("cdrom"));
        }
        access.cdrom = true;
    } else {
        conf.cdrom.clone_from(&p.cdrom);
    }

    // owner: the requester, or the parent's owner; others need `owner`
    let parent_owner = p.owner.clone().unwrap_or_default();
    let requested = conf.owner.take().unwrap_or_default();
    let may_change_owner = allowed(perms, creds, |f| f.owner);
    let mut owner = Owner::default();
    match requested.uid {
        None | Some(0) => {
            owner.uid = parent_owner.uid;
            owner.user.clone_from(&parent_owner.user);
        }
        Some(uid) if uid == creds.uid || Some(uid) == parent_owner.uid || may_change_owner => {
            owner.uid = Some(uid);
            owner.user = requested.user;
        }
        Some(_) => return Err(Error::UserMismatch),
    }
    match requested.gid {
        None => {
            owner.gid = parent_owner.gid;
            owner.group.clone_from(&parent_owner.group);
        }
        Some(gid) if Some(gid) == parent_owner.gid || may_change_owner => {
            owner.gid = Some(gid);
            owner.group = requested.group;
        }
        Some(_) => return Err(Error::GroupMismatch),
    }
    conf.owner = Some(owner);

    // an instance may not grant instance permissions of its own; it
    // passes on its parent's if the parent allows instances of instances
    if conf.allow_instance.any() || conf.instance_owner.is_some() {
        return Err(Error::InstancePermsChange);
    }
    if perms.instance {
        conf.allow_instance = *perms;
        conf.instance_owner.clone_from(&p.instance_owner);
    }

    Ok(Some((parent.id, access)))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use vmconf::{DiskConf, DiskFormat};

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;

    fn disk(p: &str) -> DiskConf {
        DiskConf {
            path: p.into(),
            format: DiskFormat::Raw,
        }
    }

    /// A registry with template "tpl" (owner root, instances by alice,
    /// `perms`), one disk, one named interface with a fixed MAC.
    fn with_template(perms: InstancePerms) -> Registry {
        let mut r = reg();
        let mut c = conf("tpl");
        c.cpus = Some(2);
        c.memory = Some(1024 * MIB);
        c.initrd = Some("/boot/initrd".into());
        c.cmdline = Some("console=ttyS0".into());
        c.disks = vec![disk("/var/vm/tpl.img")];
        c.interfaces = vec![
            IfConf {
                name: Some("tap7".into()),
                switch: Some("uplink".into()),
                lladdr: Some([2, 0, 0, 0, 0, 7]),
                up: true,
                ..IfConf::default()
            },
            IfConf {
                group: Some("g".into()),
                up: true,
                ..IfConf::default()
            },
        ];
        c.allow_instance = perms;
        c.instance_owner = Some(Owner {
            uid: Some(ALICE),
            ..Owner::default()
        });
        add_config(&mut r, c);
        r
    }

    fn child(name: &str) -> VmConf {
        let mut c = VmConf::new(name);
        c.instance_of = Some("tpl".into());
        c
    }

    fn all() -> InstancePerms {
        InstancePerms {
            boot: true,
            cdrom: true,
            cpus: true,
            disk: true,
            instance: true,
            interface: true,
            memory: true,
            owner: true,
        }
    }

    #[test]
    fn instance_inherits_cpus_memory_boot_and_interfaces() {
        let mut r = with_template(InstancePerms::default());
        let id = r.register(child("c1"), &user(ALICE), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert_eq!(vm.conf.cpus, Some(2));
        assert_eq!(vm.memory(), 1024 * MIB);
        assert_eq!(vm.conf.boot, Some("/boot/vmlinuz".into()));
        assert_eq!(vm.conf.initrd, Some("/boot/initrd".into()));
        assert_eq!(vm.conf.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(vm.nics(), 2);
        assert_eq!(vm.conf.interfaces[0].switch.as_deref(), Some("uplink"));
        assert_eq!(vm.conf.interfaces[1].group.as_deref(), Some("g"));
    }

    #[test]
    fn instance_does_not_inherit_disks_macs_or_tap_names() {
        let mut r = with_template(InstancePerms::default());
        let id = r.register(child("c1"), &user(ALICE), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert!(vm.conf.disks.is_empty());
        assert_eq!(vm.conf.interfaces[0].name, None);
        assert_ne!(vm.conf.interfaces[0].lladdr, Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(
            vm.conf.interfaces[0].lladdr.unwrap()[..3],
            [0xfe, 0xe1, 0xbb]
        );
    }

    #[test]
    fn instance_is_owned_by_its_non_root_creator() {
        let mut r = with_template(InstancePerms::default());
        let id = r.register(child("c1"), &user(ALICE), false).unwrap();
        assert_eq!(r.by_id(id).unwrap().owner_uid(), ALICE);
        assert_eq!(r.by_id(id).unwrap().user, Some(ALICE));
    }

    #[test]
    fn root_instance_inherits_the_parent_owner() {
        let mut r = reg();
        let mut c = conf("tpl");
        c.owner = Some(Owner {
            uid: Some(BOB),
            gid: Some(50),
            ..Owner::default()
        });
        add_config(&mut r, c);
        let id = r.register(child("c1"), &root(), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert_eq!(vm.owner_uid(), BOB);
        assert_eq!(vm.owner_gid(), Some(50));
    }

    #[test]
    fn unknown_template_is_invalid_template() {
        let mut r = reg();
        let err = r.register(child("c1"), &root(), false).unwrap_err();
        assert_eq!(err.code(), proto::codes::VMD_PARENT_INVALID);
    }

    #[test]
    fn instance_without_instance_permission_is_enametoolong() {
        let mut r = with_template(InstancePerms::default());
        let err = r.register(child("c1"), &user(BOB), false).unwrap_err();
        assert_eq!(err, Error::NoInstancePermission);
        assert_eq!(err.code(), libc::ENAMETOOLONG);
    }

    #[test]
    fn instance_owner_group_member_may_create_instances() {
        let mut r = with_template(InstancePerms::default());
        let tpl = r.by_name("tpl").unwrap().id;
        r.get_mut(tpl).unwrap().conf.instance_owner = Some(Owner {
            gid: Some(777),
            ..Owner::default()
        });
        let member = Creds {
            uid: BOB,
            gid: BOB,
            groups: vec![BOB, 777],
        };
        assert!(r.register(child("c1"), &member, false).is_ok());
    }

    #[test]
    fn instance_with_existing_name_is_eproclim() {
        let mut r = with_template(InstancePerms::default());
        add_config(&mut r, conf("taken"));
        let err = r.register(child("taken"), &user(ALICE), false).unwrap_err();
        assert_eq!(err, Error::InstanceExists);
        assert_eq!(err.code(), libc::EEXIST);
    }

    #[test]
    fn instance_without_cpus_permission_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.cpus = Some(1);
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("cpus"))
        );
    }

    #[test]
    fn instance_may_repeat_the_parent_cpus_without_permission() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.cpus = Some(2);
        assert!(r.register(c, &user(ALICE), false).is_ok());
    }

    #[test]
    fn instance_without_memory_permission_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.memory = Some(256 * MIB);
        let err = r.register(c, &user(ALICE), false).unwrap_err();
        assert_eq!(err, Error::InstanceOption("memory"));
        assert_eq!(err.code(), libc::EPERM);
    }

    #[test]
    fn instance_with_memory_permission_sets_memory() {
        let mut r = with_template(InstancePerms {
            memory: true,
            ..InstancePerms::default()
        });
        let mut c = child("c1");
        c.memory = Some(256 * MIB);
        let id = r.register(c, &user(ALICE), false).unwrap();
        assert_eq!(r.by_id(id).unwrap().memory(), 256 * MIB);
    }

    #[test]
    fn instance_without_disk_permission_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.disks = vec![disk("/home/alice/c1.img")];
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("disks"))
        );
    }

    #[test]
    fn instance_reusing_parent_disk_is_ebusy() {
        let mut r = with_template(all());
        let mut c = child("c1");
        c.disks = vec![disk("/var/vm/tpl.img")];
        let err = r.register(c, &user(ALICE), false).unwrap_err();
        assert_eq!(err, Error::DiskReused("/var/vm/tpl.img".into()));
        assert_eq!(err.code(), libc::EBUSY);
    }

    #[test]
    fn instance_own_disk_is_checked_against_the_user() {
        let mut r = with_template(all());
        let mut c = child("c1");
        c.disks = vec![disk("/home/alice/c1.img")];
        let id = r.register(c, &user(ALICE), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert!(vm.checkaccess.disk);
        assert!(!vm.checkaccess.kernel);
    }

    #[test]
    fn instance_reusing_parent_lladdr_is_ebusy() {
        let mut r = with_template(all());
        let mut c = child("c1");
        c.interfaces = vec![IfConf {
            lladdr: Some([2, 0, 0, 0, 0, 7]),
            ..IfConf::default()
        }];
        assert_eq!(r.register(c, &user(ALICE), false), Err(Error::LladdrReused));
    }

    #[test]
    fn instance_reusing_parent_tap_name_is_ebusy() {
        let mut r = with_template(all());
        let mut c = child("c1");
        c.interfaces = vec![IfConf {
            name: Some("tap7".into()),
            ..IfConf::default()
        }];
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InterfaceReused("tap7".into()))
        );
    }

    #[test]
    fn instance_without_interface_permission_cannot_change_nic_count() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.interfaces = vec![IfConf::default()];
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("interfaces"))
        );
    }

    #[test]
    fn instance_without_boot_permission_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.boot = Some("/home/alice/bzImage".into());
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("boot image"))
        );
    }

    #[test]
    fn instance_cmdline_needs_boot_permission() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.cmdline = Some("init=/bin/sh".into());
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("boot image"))
        );
    }

    #[test]
    fn instance_without_cdrom_permission_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.cdrom = Some("/home/alice/x.iso".into());
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstanceOption("cdrom"))
        );
    }

    #[test]
    fn root_may_override_everything_without_flags() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.cpus = Some(1);
        c.memory = Some(128 * MIB);
        c.boot = Some("/other".into());
        c.cdrom = Some("/x.iso".into());
        c.disks = vec![disk("/c1.img")];
        assert!(r.register(c, &root(), false).is_ok());
    }

    #[test]
    fn instance_with_foreign_group_is_eperm() {
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.owner = Some(Owner {
            gid: Some(99),
            ..Owner::default()
        });
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::GroupMismatch)
        );
    }

    #[test]
    fn instance_owner_neither_requester_nor_parent_owner_is_eperm() {
        // Only a configuration file names an owner (ad-hoc requests are
        // stamped with the requester); root may, a user may not.
        let mut r = with_template(InstancePerms::default());
        let mut c = child("c1");
        c.owner = Some(Owner {
            uid: Some(BOB),
            ..Owner::default()
        });
        assert_eq!(r.register(c, &user(ALICE), true), Err(Error::UserMismatch));
    }

    #[test]
    fn instance_cannot_grant_instance_permissions() {
        let mut r = with_template(all());
        let mut c = child("c1");
        c.allow_instance.memory = true;
        assert_eq!(
            r.register(c, &user(ALICE), false),
            Err(Error::InstancePermsChange)
        );
    }

    #[test]
    fn instance_of_an_instance_needs_the_instance_flag() {
        let mut r = with_template(InstancePerms {
            instance: true,
            ..InstancePerms::default()
        });
        r.register(child("c1"), &user(ALICE), false).unwrap();
        let mut c2 = child("c2");
        c2.instance_of = Some("c1".into());
        assert!(r.register(c2, &user(ALICE), false).is_ok());

        let mut r = with_template(InstancePerms::default());
        r.register(child("c1"), &user(ALICE), false).unwrap();
        let mut c2 = child("c2");
        c2.instance_of = Some("c1".into());
        assert_eq!(
            r.register(c2, &user(ALICE), false),
            Err(Error::NoInstancePermission)
        );
    }

    #[test]
    fn instance_passes_on_permissions_only_with_instance_flag() {
        let mut r = with_template(InstancePerms {
            instance: true,
            memory: true,
            ..InstancePerms::default()
        });
        let id = r.register(child("c1"), &user(ALICE), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert!(vm.conf.allow_instance.memory);
        assert_eq!(vm.conf.instance_owner.as_ref().unwrap().uid, Some(ALICE));

        let mut r = with_template(InstancePerms {
            memory: true,
            ..InstancePerms::default()
        });
        let id = r.register(child("c1"), &user(ALICE), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert!(!vm.conf.allow_instance.any());
        assert_eq!(vm.conf.instance_owner, None);
    }
}
