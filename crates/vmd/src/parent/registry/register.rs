//! Registering a VM: validation, defaults, MACs and ids (vmd.c
//! `vm_register`).

use vmconf::{IfConf, Owner, VmConf, VM_MAX_DISKS_PER_VM, VM_MAX_NICS_PER_VM};

use super::perm::check_perm;
use super::{instance, owner_uid, CheckAccess, Creds, Error, Registry, StateFlags, Vm, VmId, MIB};

/// Does a start request carry anything besides the name (vmd's
/// `vmc_flags != 0`)? A request with nothing else asks to start an existing
/// VM as configured.
pub(super) fn has_options(conf: &VmConf) -> bool {
    conf.boot.is_some()
        || conf.boot_device.is_some()
        || conf.cdrom.is_some()
        || !conf.disks.is_empty()
        || !conf.interfaces.is_empty()
        || conf.min_interfaces > 0
        || conf.memory.is_some()
        || conf.cpus.is_some()
        || conf.initrd.is_some()
        || conf.cmdline.is_some()
        || conf.instance_of.is_some()
        || conf.owner.is_some()
        || conf.allow_instance.any()
        || conf.instance_owner.is_some()
}

/// vmd's name rule: letters, digits, `.`, `-`, `_`, not starting with one
/// of the last three, shorter than `VM_NAME_MAX`.
pub(super) fn check_name(name: &str) -> Result<(), Error> {
    let first = name.bytes().next().ok_or(Error::InvalidName)?;
    if matches!(first, b'-' | b'.' | b'_') {
        return Err(Error::InvalidName);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(Error::InvalidName);
    }
    if name.len() >= vmconf::VM_NAME_MAX {
        return Err(Error::NameTooLong);
    }
    Ok(())
}

/// Pad the interfaces to `interfaces N` (a NIC with defaults: up, next free
/// tap, random MAC), refusing more than vmd's maximum first so a huge `N`
/// from a client allocates nothing.
fn normalize_nics(conf: &mut VmConf) -> Result<(), Error> {
    let min = usize::try_from(conf.min_interfaces).unwrap_or(usize::MAX);
    if conf.interfaces.len() > VM_MAX_NICS_PER_VM || min > VM_MAX_NICS_PER_VM {
        return Err(Error::TooManyInterfaces);
    }
    while conf.interfaces.len() < min {
        conf.interfaces.push(IfConf {
            up: true,
            ..IfConf::default()
        });
    }
    Ok(())
}

/// A random guest MAC for NIC `index`: `fe:e1:bb:dN:xx:xx` with N the NIC
/// number from 1 (vmd's `ether_fakeaddr` variant).
pub(super) fn random_mac(index: usize) -> [u8; 6] {
    let r = random_u16().to_le_bytes();
    let n = u8::try_from((index + 1) & 0xf).unwrap_or(0);
    [0xfe, 0xe1, 0xbb, 0xd0 | n, r[0], r[1]]
}

fn random_u16() -> u16 {
    let mut buf = [0u8; 2];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`, a
    // valid, exclusively borrowed buffer of that length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 2 {
        // No entropy source: fall back on std's randomly keyed hasher.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        return h.finish() as u16;
    }
    u16::from_le_bytes(buf)
}

impl Registry {
    /// Register a VM (vmd's `vm_register`): check it, fill in defaults and
    /// inherited settings, give it an id. `creds` is the requester (root
    /// for the configuration file); `from_config` marks VMs of vm.conf.
    ///
    /// An existing VM of that name is [`Error::Exists`] (or
    /// [`Error::PermissionDenied`] if the requester may not touch it); the
    /// caller decides whether to start it as it is
    /// ([`Registry::start_request`] does as vmd).
    pub fn register(
        &mut self,
        mut conf: VmConf,
        creds: &Creds,
        from_config: bool,
    ) -> Result<VmId, Error> {
        let requested = has_options(&conf);
        if !from_config {
            // The control process stamps every start with the peer's uid:
            // a client never chooses who it is.
            let gid = conf.owner.as_ref().and_then(|o| o.gid);
            conf.owner = Some(Owner {
                gid,
                ..owner_uid(creds.uid)
            });
        }
        normalize_nics(&mut conf)?;

        let (parent, checkaccess) = match instance::inherit(self, &mut conf, creds)? {
            Some((parent, access)) => (Some(parent), access),
            None => (None, CheckAccess::default()),
        };

        if let Some(vm) = self.by_name(&conf.name) {
            if !check_perm(Some(vm), vm.conf.owner.as_ref(), creds) {
                return Err(Error::PermissionDenied);
            }
            return Err(Error::Exists {
                id: vm.id,
                name: vm.conf.name.clone(),
                running: vm.state.running,
            });
        }

        // Non-root users may only start existing VMs or instances.
        let instance_owner = parent
            .and_then(|id| self.by_id(id))
            .and_then(|p| p.conf.instance_owner.clone());
        if !check_perm(None, instance_owner.as_ref(), creds) {
            return Err(Error::PermissionDenied);
        }
        if !requested {
            return Err(Error::NoDevices);
        }

        let cpus = conf.cpus.unwrap_or(1);
        if cpus == 0 || u32::from(cpus) > self.host.max_vcpus {
            return Err(Error::InvalidCpus);
        }
        conf.cpus = Some(cpus);
        let mem_mib = conf.memory.unwrap_or(vmconf::VM_DEFAULT_MEMORY) / MIB;
        if mem_mib == 0 || mem_mib > self.host.max_mem_mib {
            return Err(Error::InvalidMemory);
        }
        conf.memory = Some(mem_mib * MIB);
        if conf.disks.len() > VM_MAX_DISKS_PER_VM {
            return Err(Error::TooManyDisks);
        }
        if conf.boot.is_none() && conf.disks.is_empty() && conf.cdrom.is_none() {
            return Err(Error::NoBootDevice);
        }
        check_name(&conf.name)?;

        for (i, nic) in conf.interfaces.iter_mut().enumerate() {
            if let Some(sw) = nic
                .switch
                .as_ref()
                .and_then(|s| self.switches.iter().find(|sw| &sw.name == s))
            {
                // Interfaces inherit the switch's options.
                nic.locked |= sw.locked_lladdr;
                if nic.rdomain.is_none() {
                    nic.rdomain = sw.rdomain;
                }
                if nic.group.is_none() {
                    nic.group.clone_from(&sw.group);
                }
            }
            if nic.lladdr.is_none_or(|m| m == [0; 6]) {
                nic.lladdr = Some(random_mac(i));
            }
        }

        let id = self.claim_id(&conf.name, creds.uid)?;
        let state = StateFlags::default();
        self.vms.push(Vm {
            id,
            conf,
            state,
            pid: None,
            tty: None,
            uid: 0,
            from_config,
            user: (!creds.is_root()).then_some(creds.uid),
            checkaccess,
            restarts: Default::default(),
            waiter: None,
        });
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use vmconf::{DiskConf, DiskFormat, SwitchConf};

    fn disk(p: &str) -> DiskConf {
        DiskConf {
            path: p.into(),
            format: DiskFormat::Raw,
        }
    }

    #[test]
    fn memory_defaults_to_512m_and_cpus_to_one() {
        let mut r = reg();
        let id = r.register(conf("a"), &root(), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert_eq!(vm.memory(), 512 * MIB);
        assert_eq!(vm.vcpus(), 1);
    }

    #[test]
    fn memory_is_rounded_down_to_mib() {
        let mut r = reg();
        let mut c = conf("a");
        c.memory = Some(3 * MIB + 12345);
        let id = r.register(c, &root(), false).unwrap();
        assert_eq!(r.by_id(id).unwrap().memory(), 3 * MIB);
    }

    #[test]
    fn memory_below_one_mib_is_einval() {
        let mut r = reg();
        let mut c = conf("a");
        c.memory = Some(MIB - 1);
        let err = r.register(c, &root(), false).unwrap_err();
        assert_eq!(err, Error::InvalidMemory);
        assert_eq!(err.code(), libc::EINVAL);
    }

    #[test]
    fn memory_above_host_limit_is_einval() {
        let mut r = reg();
        let mut c = conf("a");
        c.memory = Some((r.host.max_mem_mib + 1) * MIB);
        assert_eq!(r.register(c, &root(), false), Err(Error::InvalidMemory));
    }

    #[test]
    fn cpus_above_host_limit_are_einval() {
        let mut r = reg();
        let mut c = conf("a");
        c.cpus = Some(9);
        assert_eq!(
            r.register(c.clone(), &root(), false),
            Err(Error::InvalidCpus)
        );
        c.cpus = Some(8);
        assert!(r.register(c, &root(), false).is_ok());
    }

    #[test]
    fn zero_cpus_are_einval() {
        let mut r = reg();
        let mut c = conf("a");
        c.cpus = Some(0);
        assert_eq!(r.register(c, &root(), false), Err(Error::InvalidCpus));
    }

    #[test]
    fn five_disks_are_too_many() {
        let mut r = reg();
        let mut c = conf("a");
        c.disks = (0..5).map(|i| disk(&format!("/d{i}"))).collect();
        assert_eq!(
            r.register(c.clone(), &root(), false),
            Err(Error::TooManyDisks)
        );
        c.disks.pop();
        assert!(r.register(c, &root(), false).is_ok());
    }

    #[test]
    fn five_interfaces_are_too_many() {
        let mut r = reg();
        let mut c = conf("a");
        c.interfaces = vec![IfConf::default(); 5];
        assert_eq!(r.register(c, &root(), false), Err(Error::TooManyInterfaces));
    }

    #[test]
    fn interfaces_count_includes_interfaces_n() {
        let mut r = reg();
        let mut c = conf("a");
        c.interfaces = vec![IfConf::default(); 2];
        c.min_interfaces = 5;
        assert_eq!(
            r.register(c.clone(), &root(), false),
            Err(Error::TooManyInterfaces)
        );
        c.min_interfaces = 4;
        let id = r.register(c, &root(), false).unwrap();
        let vm = r.by_id(id).unwrap();
        assert_eq!(vm.nics(), 4);
        assert!(vm.conf.interfaces[3].up);
    }

    #[test]
    fn huge_interfaces_n_is_refused() {
        let mut r = reg();
        let mut c = conf("a");
        c.min_interfaces = u32::MAX;
        assert_eq!(r.register(c, &root(), false), Err(Error::TooManyInterfaces));
    }

    #[test]
    fn no_kernel_disk_or_cdrom_is_einval() {
        let mut r = reg();
        let mut c = VmConf::new("a");
        c.memory = Some(64 * MIB);
        let err = r.register(c, &root(), false).unwrap_err();
        assert_eq!(err, Error::NoBootDevice);
        assert_eq!(err.to_string(), "no kernel or disk/cdrom specified");
    }

    #[test]
    fn disk_or_cdrom_alone_is_bootable() {
        let mut r = reg();
        let mut c = VmConf::new("a");
        c.disks = vec![disk("/d")];
        assert!(r.register(c, &root(), false).is_ok());
        let mut c = VmConf::new("b");
        c.cdrom = Some("/x.iso".into());
        assert!(r.register(c, &root(), false).is_ok());
    }

    #[test]
    fn request_without_options_for_unknown_vm_is_disk_missing() {
        let mut r = reg();
        let err = r.register(VmConf::new("a"), &root(), false).unwrap_err();
        assert_eq!(err, Error::NoDevices);
        assert_eq!(err.code(), proto::codes::VMD_DISK_MISSING);
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in ["", "-a", ".a", "_a", "a b", "a/b", "ä"] {
            let mut r = reg();
            assert_eq!(
                r.register(conf(name), &root(), false),
                Err(Error::InvalidName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn valid_names_with_dot_dash_underscore_pass() {
        let mut r = reg();
        assert!(r.register(conf("Web-1.a_b"), &root(), false).is_ok());
    }

    #[test]
    fn name_of_64_bytes_is_too_long() {
        let mut r = reg();
        assert_eq!(
            r.register(conf(&"a".repeat(64)), &root(), false),
            Err(Error::NameTooLong)
        );
        assert!(r.register(conf(&"a".repeat(63)), &root(), false).is_ok());
    }

    #[test]
    fn existing_name_is_ealready_with_its_state() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        let err = r.register(conf("web"), &root(), false).unwrap_err();
        assert_eq!(
            err,
            Error::Exists {
                id,
                name: "web".into(),
                running: false
            }
        );
        assert_eq!(err.code(), libc::EALREADY);
    }

    #[test]
    fn existing_vm_of_another_user_is_eperm() {
        let mut r = reg();
        add_config(&mut r, conf("web"));
        assert_eq!(
            r.register(conf("web"), &user(1000), false),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn non_root_cannot_create_a_new_vm() {
        let mut r = reg();
        assert_eq!(
            r.register(conf("mine"), &user(1000), false),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn adhoc_vm_is_owned_by_the_requester() {
        let mut r = reg();
        let mut c = conf("a");
        c.owner = Some(Owner {
            uid: Some(1234),
            ..Owner::default()
        });
        let id = r.register(c, &root(), false).unwrap();
        assert_eq!(r.by_id(id).unwrap().owner_uid(), 0);
    }

    #[test]
    fn unset_macs_get_fe_e1_bb_dn() {
        let mut r = reg();
        let mut c = conf("a");
        c.min_interfaces = 3;
        let id = r.register(c, &root(), false).unwrap();
        for (i, nic) in r.by_id(id).unwrap().conf.interfaces.iter().enumerate() {
            let m = nic.lladdr.unwrap();
            assert_eq!(&m[..3], &[0xfe, 0xe1, 0xbb]);
            assert_eq!(m[3], 0xd0 | (i as u8 + 1));
        }
    }

    #[test]
    fn given_macs_are_kept() {
        let mut r = reg();
        let mut c = conf("a");
        let mac = [0x02, 0, 0, 0, 0, 1];
        c.interfaces = vec![IfConf {
            lladdr: Some(mac),
            ..IfConf::default()
        }];
        let id = r.register(c, &root(), false).unwrap();
        assert_eq!(r.by_id(id).unwrap().conf.interfaces[0].lladdr, Some(mac));
    }

    #[test]
    fn interfaces_inherit_locked_lladdr_from_their_switch() {
        let mut r = reg();
        r.switches.push(SwitchConf {
            name: "uplink".into(),
            enabled: true,
            group: Some("vms".into()),
            ifname: "br0".into(),
            locked_lladdr: true,
            rdomain: Some(3),
            up: true,
            line: 1,
        });
        let mut c = conf("a");
        c.interfaces = vec![
            IfConf {
                switch: Some("uplink".into()),
                ..IfConf::default()
            },
            IfConf::default(),
        ];
        let id = r.register(c, &root(), false).unwrap();
        let nics = &r.by_id(id).unwrap().conf.interfaces;
        assert!(nics[0].locked);
        assert_eq!(nics[0].rdomain, Some(3));
        assert_eq!(nics[0].group.as_deref(), Some("vms"));
        assert!(!nics[1].locked);
    }

    #[test]
    fn config_vms_are_not_counted_against_a_user() {
        let mut r = reg();
        let id = add_config(&mut r, conf("a"));
        assert_eq!(r.by_id(id).unwrap().user, None);
        assert!(r.by_id(id).unwrap().from_config);
    }
}
