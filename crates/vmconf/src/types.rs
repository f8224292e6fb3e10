//! The parsed and validated vm.conf(5) configuration (vmd.h's `vmd_config`,
//! `vmd_switch` and `vmop_create_params`, as plain Rust data).
//!
//! These types cross process boundaries: the parent sends them to its
//! children and vmctl reuses [`VmConf`] for its `start` request.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Most disks a VM can have (vmd.h `VM_MAX_DISKS_PER_VM`).
pub const VM_MAX_DISKS_PER_VM: usize = 4;
/// Most network interfaces a VM can have (vmd.h `VM_MAX_NICS_PER_VM`).
pub const VM_MAX_NICS_PER_VM: usize = 4;
/// A VM or switch name must be shorter than this (vmd.h `VM_NAME_MAX`).
pub const VM_NAME_MAX: usize = 64;
/// Most vCPUs a VM can have (our extension; vmd has one).
pub const VM_MAX_VCPUS: u8 = 255;
/// Memory a VM gets when none is configured (vmd.h `VM_DEFAULT_MEMORY`): 512 MiB.
pub const VM_DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// Default seconds between staggered start batches
/// (`VMD_DEFAULT_STAGGERED_START_DELAY`).
pub const VMD_DEFAULT_STAGGERED_START_DELAY: u32 = 30;
/// Longest Linux interface name (`IFNAMSIZ - 1`).
pub const IF_NAME_MAX: usize = 15;
/// Highest routing table id accepted for `rdomain` (OpenBSD's `RT_TABLEID_MAX`).
pub const RT_TABLEID_MAX: u32 = 255;

/// A whole configuration file after parsing and validation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Settings outside any block.
    pub global: Global,
    /// `switch NAME { ... }` blocks, in file order.
    pub switches: Vec<SwitchConf>,
    /// `vm NAME { ... }` blocks, in file order.
    pub vms: Vec<VmConf>,
}

/// An IPv4 network prefix, e.g. `100.64.0.0/10`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length in bits.
    pub len: u8,
}

/// An IPv6 network prefix, e.g. `fd00::/8`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Net {
    /// Network address (host bits cleared).
    pub addr: Ipv6Addr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Ipv4Net {
    /// vmd's default `local prefix`: 100.64.0.0/10.
    pub const DEFAULT: Ipv4Net = Ipv4Net {
        addr: Ipv4Addr::new(100, 64, 0, 0),
        len: 10,
    };
}

impl Default for Ipv4Net {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Ipv6Net {
    /// The prefix `local inet6` uses without an explicit one: fd00::/8.
    pub const DEFAULT: Ipv6Net = Ipv6Net {
        addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
        len: 8,
    };
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Global settings (vmd.h `struct vmd_config`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// `local prefix`: addresses for `local interface`s; default 100.64.0.0/10.
    pub local_prefix: Ipv4Net,
    /// `local inet6 [prefix P]`: `None` = IPv6 on local interfaces disabled;
    /// `local inet6` without a prefix gives [`Ipv6Net::DEFAULT`]. Length ≤ 64.
    pub local_prefix6: Option<Ipv6Net>,
    /// `socket owner`: owner of the control socket; `None` = root, mode 0660.
    pub socket_owner: Option<Owner>,
    /// `staggered start parallel N delay S`.
    pub staggered: Staggered,
    /// `user limit ...` (our extension): per-user resource limits.
    pub user_limits: UserLimits,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            local_prefix: Ipv4Net::DEFAULT,
            local_prefix6: None,
            socket_owner: None,
            staggered: Staggered::default(),
            user_limits: UserLimits::default(),
        }
    }
}

/// How config VMs are started: `parallel` at a time, `delay` seconds apart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staggered {
    /// VMs per batch; `None` = the number of online CPUs (decided by the daemon).
    pub parallel: Option<u32>,
    /// Seconds between batches; default 30.
    pub delay: u32,
}

impl Default for Staggered {
    fn default() -> Self {
        Staggered {
            parallel: None,
            delay: VMD_DEFAULT_STAGGERED_START_DELAY,
        }
    }
}

/// Per-user limits for non-root users (vmd's `VM_DEFAULT_USER_MAX*`),
/// configurable with `user limit cpus N memory SIZE interfaces N`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserLimits {
    /// Total vCPUs of one user's running VMs; default 4.
    pub max_cpus: u32,
    /// Total memory of one user's running VMs in MiB; default 2048.
    pub max_mem_mib: u64,
    /// Total network interfaces of one user's running VMs; default 8.
    pub max_ifs: u32,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            max_cpus: 4,
            max_mem_mib: 2048,
            max_ifs: 8,
        }
    }
}

/// An owner: `user[:group]`, `:group` or a numeric uid.
///
/// Names are resolved to ids when the file is parsed; the names are kept for
/// display.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Owner {
    /// Owning user id, if a user was given.
    pub uid: Option<u32>,
    /// Owning group id, if a group was given.
    pub gid: Option<u32>,
    /// The user name as written (or the number for a numeric uid).
    pub user: Option<String>,
    /// The group name as written.
    pub group: Option<String>,
}

impl std::fmt::Display for Owner {
    /// `user:group`, `user`, `:group` (names, or ids where no name is known),
    /// or nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self
            .user
            .clone()
            .or_else(|| self.uid.map(|u| u.to_string()));
        let group = self
            .group
            .clone()
            .or_else(|| self.gid.map(|g| g.to_string()));
        match (user, group) {
            (Some(u), Some(g)) => write!(f, "{u}:{g}"),
            (Some(u), None) => write!(f, "{u}"),
            (None, Some(g)) => write!(f, ":{g}"),
            (None, None) => Ok(()),
        }
    }
}

/// `switch NAME { ... }` (vmd.h `struct vmd_switch`): a Linux bridge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SwitchConf {
    /// The switch's name, used by `interface { switch NAME }`.
    pub name: String,
    /// `enable` (default) or `disable`.
    pub enabled: bool,
    /// `group G`: interface group given to VM interfaces on this switch.
    pub group: Option<String>,
    /// `interface IFNAME`: the host bridge device (required).
    pub ifname: String,
    /// `locked lladdr`: VM interfaces on this switch may only send from
    /// their own MAC address.
    pub locked_lladdr: bool,
    /// `rdomain N`: the VRF (routing table) of the bridge and its ports.
    pub rdomain: Option<u32>,
    /// `up` (default) or `down`.
    pub up: bool,
    /// Line of the `switch` keyword.
    pub line: u32,
}

/// `boot device cdrom|disk|net`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootDevice {
    /// Boot from the CD-ROM image.
    Cdrom,
    /// Boot from the first disk.
    Disk,
    /// Simulated network boot of the `boot` kernel.
    Net,
}

/// A disk image format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DiskFormat {
    /// Plain image.
    #[default]
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Not decided yet (a vmctl request without `raw:`/`qcow2:`): the parent
    /// sniffs the image with [`crate::sniff_disk_format`]. The parser never
    /// produces it.
    Auto,
}

/// `disk PATH [format raw|qcow2]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DiskConf {
    /// Absolute, canonical path of the image.
    pub path: PathBuf,
    /// Its format, given or sniffed from the file (qcow2 magic, else raw).
    pub format: DiskFormat,
}

/// `[local] interface [NAME] [{ ... }]`: one virtio-net NIC on a host tap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IfConf {
    /// Host tap device name (`tapN` or `tap`); `None` = next free.
    pub name: Option<String>,
    /// `switch S`: bridge the tap into this switch.
    pub switch: Option<String>,
    /// `group G`: interface group of the tap.
    pub group: Option<String>,
    /// `lladdr xx:xx:xx:xx:xx:xx`: guest MAC; `None` = random
    /// `fe:e1:bb:dN:xx:xx` chosen when the VM is registered.
    pub lladdr: Option<[u8; 6]>,
    /// `locked lladdr`: the guest may only send from its MAC.
    pub locked: bool,
    /// `rdomain N`: the VRF of the tap.
    pub rdomain: Option<u32>,
    /// `up` (default) or `down`.
    pub up: bool,
    /// `local interface`: host-side address from `local prefix`, DHCP by vmd.
    pub local: bool,
}

impl Default for IfConf {
    /// A plain interface: any free tap, random MAC, up, on no switch.
    fn default() -> Self {
        IfConf {
            name: None,
            switch: None,
            group: None,
            lladdr: None,
            locked: false,
            rdomain: None,
            up: true,
            local: false,
        }
    }
}

/// What an instance of a VM may override (`allow instance { ... }`,
/// vmd.h `VMOP_CREATE_*` instance flags).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InstancePerms {
    /// `boot`: kernel/BIOS image, and with it `initrd` and `cmdline`.
    pub boot: bool,
    /// `cdrom`: the ISO image.
    pub cdrom: bool,
    /// `cpus` (our extension): the vCPU count.
    pub cpus: bool,
    /// `disk`: disk images.
    pub disk: bool,
    /// `instance`: instances may themselves be instantiated.
    pub instance: bool,
    /// `interface`: network interfaces.
    pub interface: bool,
    /// `memory`: memory size.
    pub memory: bool,
    /// `owner X` was given: [`VmConf::instance_owner`] says who may create
    /// instances.
    pub owner: bool,
}

impl InstancePerms {
    /// True if any flag is set.
    pub fn any(&self) -> bool {
        self.boot
            || self.cdrom
            || self.cpus
            || self.disk
            || self.instance
            || self.interface
            || self.memory
            || self.owner
    }
}

/// `vm NAME { ... }` or `vm PARENT instance NAME { ... }` (vmd.h
/// `struct vmop_create_params`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmConf {
    /// The VM's name.
    pub name: String,
    /// The parent of an instance, from `vm PARENT instance NAME { ... }`
    /// (parent first, as in parse.y) or `vmctl start -t PARENT`.
    pub instance_of: Option<String>,
    /// `enable` (default: start with vmd) or `disable`.
    pub enabled: bool,
    /// `boot PATH`: kernel (bzImage/ELF) or BIOS image, canonical path.
    pub boot: Option<PathBuf>,
    /// `boot device cdrom|disk|net`.
    pub boot_device: Option<BootDevice>,
    /// `cdrom PATH`: ISO image, canonical path.
    pub cdrom: Option<PathBuf>,
    /// `disk PATH [format F]`, at most [`VM_MAX_DISKS_PER_VM`].
    pub disks: Vec<DiskConf>,
    /// `[local] interface ...`, at most [`VM_MAX_NICS_PER_VM`].
    pub interfaces: Vec<IfConf>,
    /// `interfaces N`: at least this many NICs (extra ones get defaults).
    pub min_interfaces: u32,
    /// `memory SIZE` in bytes, rounded down to MiB; `None` = default 512M.
    pub memory: Option<u64>,
    /// `cpus N` (our extension); `None` = 1.
    pub cpus: Option<u8>,
    /// `initrd PATH` (our extension), canonical path.
    pub initrd: Option<PathBuf>,
    /// `cmdline "..."` (our extension): kernel command line.
    pub cmdline: Option<String>,
    /// `owner ...`: who may manage the VM besides root.
    pub owner: Option<Owner>,
    /// `allow instance { ... }` flags.
    pub allow_instance: InstancePerms,
    /// `allow instance { owner X }`: who may create instances.
    pub instance_owner: Option<Owner>,
    /// Line of the `vm` keyword (0 for VMs that did not come from a file).
    #[serde(default)]
    pub line: u32,
}

impl VmConf {
    /// Number of NICs the VM gets: its `interface` lines, or more if
    /// `interfaces N` asks for more (parse.y keeps the larger).
    pub fn nic_count(&self) -> usize {
        self.interfaces.len().max(self.min_interfaces as usize)
    }

    /// Its NICs, padded with default interfaces up to [`Self::nic_count`].
    pub fn effective_interfaces(&self) -> Vec<IfConf> {
        let mut nics = self.interfaces.clone();
        nics.resize(self.nic_count(), IfConf::default());
        nics
    }

    /// An empty VM with vm.conf's defaults (enabled, nothing attached).
    pub fn new(name: impl Into<String>) -> Self {
        VmConf {
            name: name.into(),
            instance_of: None,
            enabled: true,
            boot: None,
            boot_device: None,
            cdrom: None,
            disks: Vec::new(),
            interfaces: Vec::new(),
            min_interfaces: 0,
            memory: None,
            cpus: None,
            initrd: None,
            cmdline: None,
            owner: None,
            allow_instance: InstancePerms::default(),
            instance_owner: None,
            line: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_display() {
        let o = |uid, gid, user: Option<&str>, group: Option<&str>| Owner {
            uid,
            gid,
            user: user.map(String::from),
            group: group.map(String::from),
        };
        assert_eq!(
            o(Some(0), Some(0), Some("root"), Some("wheel")).to_string(),
            "root:wheel"
        );
        assert_eq!(o(Some(1000), None, None, None).to_string(), "1000");
        assert_eq!(o(None, Some(5), None, Some("tty")).to_string(), ":tty");
        assert_eq!(o(None, Some(5), None, None).to_string(), ":5");
        assert_eq!(Owner::default().to_string(), "");
    }

    #[test]
    fn padded_interfaces_are_plain_and_up() {
        let mut vm = VmConf::new("v");
        vm.interfaces.push(IfConf {
            switch: Some("s".into()),
            ..IfConf::default()
        });
        vm.min_interfaces = 3;
        let nics = vm.effective_interfaces();
        assert_eq!(vm.nic_count(), 3);
        assert_eq!(nics[0].switch.as_deref(), Some("s"));
        assert!(nics[1..]
            .iter()
            .all(|n| n.up && n.switch.is_none() && !n.local));
        vm.min_interfaces = 0;
        assert_eq!(vm.nic_count(), 1);
    }
}
