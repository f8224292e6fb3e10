//! The parent's VM registry: every VM the daemon knows, its state, and the
//! rules vmd's `vmd.c` applies to it (`vm_register`, `vm_claimid`,
//! `vm_getby*`, `vm_stop`, `vm_remove`, `vm_instance`, `vm_checkperm`,
//! `vm_checkaccess`, the answers of `vmd_dispatch_control` and
//! `vmd_dispatch_vmm`, `vmd_reload` and `start_vm_batch`).
//!
//! Pure logic: nothing here spawns, sends or opens anything except the
//! files [`FileCheck::open`] opens for the daemon and the user and group
//! lookups of [`Creds`]. The daemon asks, the registry decides and records,
//! the daemon carries out the returned actions.
//!
//! Files: `register.rs` validates and registers, `instance.rs` resolves
//! instances, `perm.rs` holds permissions and file access, `lifecycle.rs`
//! the start/stop/pause/wait/exit decisions, `config.rs`
//! load/reload/reset and the staggered start, `status.rs` the `vmctl
//! status` rows. Result codes and vmctl's messages for them are in
//! [`proto::codes`].

mod config;
mod instance;
mod lifecycle;
mod perm;
mod register;
mod status;

use std::path::PathBuf;

pub use config::{ConfigAction, LoadMode, PlannedBatch, StartBatch};
pub use lifecycle::{
    ExitOutcome, Released, RestartLimit, StartFailure, StartPlan, StopAction, StopDecision,
    VM_START_RATE_LIMIT, VM_START_RATE_SEC,
};
pub use perm::{check_access, check_access_file, check_perm, Access, Creds, FileCheck, FileRole};
pub use proto::{VmInfo, VmState, VmTarget};
pub use status::owner_string;
use vmconf::{Global, Owner, SwitchConf, VmConf};

/// A VM's id: stable per (name, registering uid) while the daemon runs,
/// never 0.
pub type VmId = u32;

/// Most memory a VM may have, in MiB (vmd's `VMM_MAX_VM_MEM_SIZE`, 128 GiB
/// on current OpenBSD/amd64).
pub const VMM_MAX_VM_MEM_MIB: u64 = 128 * 1024;

const MIB: u64 = 1024 * 1024;

/// Why the registry refused something. Each variant maps to the result code
/// the daemon sends back ([`Error::code`]); vmctl prints
/// [`proto::codes::describe`] of that code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// vm not found
    #[error("vm not found")]
    NotFound,
    /// vm already exists
    #[error("vm {name} already exists (id {id})")]
    Exists {
        /// The existing VM.
        id: VmId,
        /// Its name.
        name: String,
        /// Whether it is running (a stopped one may be started as is).
        running: bool,
    },
    /// vm is already running
    #[error("vm is already running")]
    AlreadyRunning,
    /// vm is already stopping
    #[error("vm is already stopping")]
    AlreadyStopping,
    /// vm is already paused
    #[error("vm is already paused")]
    AlreadyPaused,
    /// vm is not paused
    #[error("vm is not paused")]
    NotPaused,
    /// vm is not running
    #[error("vm is not running")]
    NotRunning,
    /// cannot stop vm that is not running
    #[error("cannot stop vm that is not running")]
    StopNotRunning,
    /// a client is already waiting for this vm
    #[error("a client is already waiting for this vm")]
    AlreadyWaiting,
    /// permission denied
    #[error("permission denied")]
    PermissionDenied,
    /// invalid configuration, no devices
    #[error("invalid configuration, no devices")]
    NoDevices,
    /// no kernel or disk/cdrom specified
    #[error("no kernel or disk/cdrom specified")]
    NoBootDevice,
    /// invalid VM name
    #[error("invalid VM name")]
    InvalidName,
    /// vm name too long
    #[error("vm name too long")]
    NameTooLong,
    /// invalid number of CPUs
    #[error("invalid number of CPUs")]
    InvalidCpus,
    /// invalid memory size
    #[error("invalid memory size")]
    InvalidMemory,
    /// invalid number of disks
    #[error("invalid number of disks")]
    TooManyDisks,
    /// invalid number of interfaces
    #[error("invalid number of interfaces")]
    TooManyInterfaces,
    /// too many vms
    #[error("too many vms")]
    TooManyVms,
    /// invalid template
    #[error("invalid template")]
    InvalidTemplate,
    /// no permission to create vm instance
    #[error("no permission to create vm instance")]
    NoInstancePermission,
    /// instance name is already in use
    #[error("instance name is already in use")]
    InstanceExists,
    /// no permission to set an instance option
    #[error("no permission to set {0}")]
    InstanceOption(&'static str),
    /// disk cannot be reused
    #[error("disk {0} cannot be reused")]
    DiskReused(PathBuf),
    /// lladdr cannot be reused
    #[error("lladdr cannot be reused")]
    LladdrReused,
    /// interface cannot be reused
    #[error("interface {0} cannot be reused")]
    InterfaceReused(String),
    /// user mismatch
    #[error("user mismatch")]
    UserMismatch,
    /// group mismatch
    #[error("group mismatch")]
    GroupMismatch,
    /// cannot change instance permissions
    #[error("cannot change instance permissions")]
    InstancePermsChange,
    /// user limit reached
    #[error("user {uid} {what} limit reached")]
    UserLimit {
        /// The user.
        uid: u32,
        /// `cpu`, `memory` or `interface`.
        what: &'static str,
    },
    /// restarted too quickly
    #[error("restarted too quickly")]
    RestartedTooQuickly,
    /// can't open kernel or BIOS boot image
    #[error("can't open kernel or BIOS boot image {0}")]
    KernelMissing(PathBuf),
    /// can't open initrd
    #[error("can't open initrd {0}")]
    InitrdMissing(PathBuf),
    /// can't open disk
    #[error("can't open disk {0}")]
    DiskMissing(PathBuf),
    /// can't open cdrom
    #[error("can't open cdrom {0}")]
    CdromMissing(PathBuf),
    /// cdrom is not a regular file
    #[error("cdrom {0} is not a regular file")]
    CdromInvalid(PathBuf),
    /// not a regular file
    #[error("{0} is not a regular file")]
    NotRegularFile(PathBuf),
    /// no access to file
    #[error("no access to {0}")]
    AccessDenied(PathBuf),
    /// a vm of the configuration failed
    #[error("vm \"{name}\" failed: {source}")]
    ConfigVm {
        /// The VM's name.
        name: String,
        /// Why.
        source: Box<Error>,
    },
}

impl Error {
    /// The result code for the wire: an errno value or one of vmd's codes
    /// (1001..1007, [`proto::codes`]).
    ///
    /// OpenBSD's `EPROCLIM` (instance name in use) has no Linux errno;
    /// `EEXIST` stands in for it.
    pub fn code(&self) -> i32 {
        use proto::codes::*;
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists { .. }
            | Error::AlreadyRunning
            | Error::AlreadyStopping
            | Error::AlreadyPaused => libc::EALREADY,
            Error::NotPaused | Error::NotRunning => libc::EINVAL,
            Error::StopNotRunning => VMD_VM_STOP_INVALID,
            Error::AlreadyWaiting => libc::EINTR,
            Error::PermissionDenied
            | Error::InstanceOption(_)
            | Error::UserMismatch
            | Error::GroupMismatch
            | Error::InstancePermsChange
            | Error::UserLimit { .. }
            | Error::RestartedTooQuickly
            | Error::NotRegularFile(_)
            | Error::AccessDenied(_) => libc::EPERM,
            Error::NoDevices | Error::DiskMissing(_) => VMD_DISK_MISSING,
            Error::NoBootDevice
            | Error::InvalidName
            | Error::NameTooLong
            | Error::InvalidCpus
            | Error::InvalidMemory
            | Error::TooManyDisks
            | Error::TooManyInterfaces
            | Error::TooManyVms => libc::EINVAL,
            Error::InvalidTemplate => VMD_PARENT_INVALID,
            Error::NoInstancePermission => libc::ENAMETOOLONG,
            Error::InstanceExists => libc::EEXIST,
            Error::DiskReused(_) | Error::LladdrReused | Error::InterfaceReused(_) => libc::EBUSY,
            Error::KernelMissing(_) | Error::InitrdMissing(_) => libc::ENOENT,
            Error::CdromMissing(_) => VMD_CDROM_MISSING,
            Error::CdromInvalid(_) => VMD_CDROM_INVALID,
            Error::ConfigVm { source, .. } => source.code(),
        }
    }
}

/// The message vmctl prints for a result code (vmd's own text for
/// 1001..1007, the system's for errno values). The table lives in
/// [`proto::codes`] so vmctl shares it.
pub fn message(code: i32) -> String {
    proto::codes::describe(code)
}

/// A VM's state bits (vmd's `VM_STATE_*`). `vmctl status` shows the first
/// that is set of paused, waiting, stopping (shutdown), running, else
/// stopped ([`StateFlags::shown`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateFlags {
    /// A `vm` process runs it.
    pub running: bool,
    /// Its vCPUs are paused.
    pub paused: bool,
    /// Enabled in the configuration, waiting for its staggered start.
    pub waiting: bool,
    /// Asked to shut down, not yet stopped.
    pub shutdown: bool,
    /// `disable`d in the configuration.
    pub disabled: bool,
    /// Started from a received (migrated) image.
    pub received: bool,
}

impl StateFlags {
    /// The state vmctl shows, by vmd's precedence.
    pub fn shown(&self) -> VmState {
        if self.paused {
            VmState::Paused
        } else if self.waiting {
            VmState::Waiting
        } else if self.shutdown {
            VmState::Stopping
        } else if self.running {
            VmState::Running
        } else {
            VmState::Stopped
        }
    }
}

/// Which of a VM's files must be checked against the starting user's
/// permissions (vmd's `vmc_checkaccess`): the ones an instance chose itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckAccess {
    /// Kernel/BIOS image and initrd.
    pub kernel: bool,
    /// The ISO image.
    pub cdrom: bool,
    /// Disk images.
    pub disk: bool,
}

/// What the host allows one VM (our limits; vmd's are compile-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Most vCPUs of one VM (default: online CPUs).
    pub max_vcpus: u32,
    /// Most memory of one VM in MiB.
    pub max_mem_mib: u64,
}

impl HostLimits {
    /// This host's limits: as many vCPUs as online CPUs (at most
    /// [`vmconf::VM_MAX_VCPUS`]), [`VMM_MAX_VM_MEM_MIB`] of memory.
    pub fn detect() -> Self {
        HostLimits {
            max_vcpus: online_cpus().min(u32::from(vmconf::VM_MAX_VCPUS)),
            max_mem_mib: VMM_MAX_VM_MEM_MIB,
        }
    }
}

/// The number of online CPUs (vmd's `HW_NCPUONLINE`), 1 if unknown.
pub fn online_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// One registered VM (vmd's `struct vmd_vm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Its id.
    pub id: VmId,
    /// Its configuration, resolved: cpus and memory set, memory in whole
    /// MiB, every interface present with its MAC, owner set, an instance's
    /// inherited settings filled in.
    pub conf: VmConf,
    /// State bits.
    pub state: StateFlags,
    /// Its `vm` process while running.
    pub pid: Option<i32>,
    /// Its console tty, from start until stop (kept across a reboot).
    pub tty: Option<PathBuf>,
    /// The uid that started it (vmd's `vm_uid`); 0 when stopped.
    pub uid: u32,
    /// It came from vm.conf: kept when stopped, not removed.
    pub from_config: bool,
    /// The non-root user who registered it, whose limits its resources
    /// count against (vmd's `vm_user`).
    pub user: Option<u32>,
    /// Files to check against the starting user.
    pub checkaccess: CheckAccess,
    /// The restart rate limit.
    pub restarts: RestartLimit,
    /// The control client waiting for it to stop (vmd's `vm_peerid`).
    pub waiter: Option<u64>,
}

impl Vm {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.conf.name
    }

    /// The configured owner's uid (0: root).
    pub fn owner_uid(&self) -> u32 {
        self.conf.owner.as_ref().and_then(|o| o.uid).unwrap_or(0)
    }

    /// The configured owner's group, if any.
    pub fn owner_gid(&self) -> Option<u32> {
        self.conf.owner.as_ref().and_then(|o| o.gid)
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        u32::from(self.conf.cpus.unwrap_or(1))
    }

    /// Memory in bytes.
    pub fn memory(&self) -> u64 {
        self.conf.memory.unwrap_or(vmconf::VM_DEFAULT_MEMORY)
    }

    /// Memory in MiB.
    pub fn memory_mib(&self) -> u64 {
        self.memory() / MIB
    }

    /// Number of network interfaces.
    pub fn nics(&self) -> u32 {
        u32::try_from(self.conf.interfaces.len()).unwrap_or(u32::MAX)
    }
}

/// A claimed id (vmd's `struct name2id`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    name: String,
    uid: u32,
    id: VmId,
}

/// The registry (the VM part of vmd's `struct vmd`).
#[derive(Debug, Clone)]
pub struct Registry {
    /// VMs in registration order.
    vms: Vec<Vm>,
    /// (name, uid) → id, for the daemon's lifetime.
    known: Vec<Claim>,
    /// The last id handed out.
    last_id: VmId,
    /// Switches of the configuration, with whether they were created.
    switches: Vec<SwitchConf>,
    /// Per-VM host limits.
    pub host: HostLimits,
    /// Global settings of the configuration (user limits, staggered start).
    pub global: Global,
}

impl Registry {
    /// An empty registry.
    pub fn new(host: HostLimits) -> Self {
        Registry {
            vms: Vec::new(),
            known: Vec::new(),
            last_id: 0,
            switches: Vec::new(),
            host,
            global: Global::default(),
        }
    }

    /// Every VM, in registration order.
    pub fn vms(&self) -> impl Iterator<Item = &Vm> {
        self.vms.iter()
    }

    /// The configured switches.
    pub fn switches(&self) -> &[SwitchConf] {
        &self.switches
    }

    /// The VM with this id (vmd's `vm_getbyvmid`); none for 0.
    pub fn by_id(&self, id: VmId) -> Option<&Vm> {
        if id == 0 {
            return None;
        }
        self.vms.iter().find(|vm| vm.id == id)
    }

    /// The VM with this name (vmd's `vm_getbyname`).
    pub fn by_name(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.conf.name == name)
    }

    /// The VM run by this process (vmd's `vm_getbypid`).
    pub fn by_pid(&self, pid: i32) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.pid == Some(pid))
    }

    /// The VM a request names, or [`Error::NotFound`]. `All` names no
    /// single VM.
    pub fn by_target(&self, target: &VmTarget) -> Result<&Vm, Error> {
        match target {
            VmTarget::Id(id) => self.by_id(*id),
            VmTarget::Name(name) => self.by_name(name),
            VmTarget::All => None,
        }
        .ok_or(Error::NotFound)
    }

    pub(crate) fn get_mut(&mut self, id: VmId) -> Option<&mut Vm> {
        if id == 0 {
            return None;
        }
        self.vms.iter_mut().find(|vm| vm.id == id)
    }

    /// Claim the id of (name, uid): the same pair always gets the same id
    /// while the daemon runs (vmd's `vm_claimid`).
    pub fn claim_id(&mut self, name: &str, uid: u32) -> Result<VmId, Error> {
        if let Some(c) = self.known.iter().find(|c| c.name == name && c.uid == uid) {
            return Ok(c.id);
        }
        if name.len() >= vmconf::VM_NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let id = self.last_id.checked_add(1).ok_or(Error::TooManyVms)?;
        self.last_id = id;
        self.known.push(Claim {
            name: name.to_string(),
            uid,
            id,
        });
        Ok(id)
    }

    /// Record a VM's console tty once the daemon has opened it.
    pub fn set_tty(&mut self, id: VmId, tty: PathBuf) -> Result<(), Error> {
        self.get_mut(id).ok_or(Error::NotFound)?.tty = Some(tty);
        Ok(())
    }

    /// Take a VM out of the registry (vmd's `vm_remove`). Returns it, with
    /// its tty for the daemon to release.
    pub fn remove(&mut self, id: VmId) -> Option<Vm> {
        let pos = self.vms.iter().position(|vm| vm.id == id)?;
        Some(self.vms.remove(pos))
    }

    /// Mark a VM stopped (vmd's `vm_stop`): not running, not stopping, not
    /// paused, no process. Unless `keep_tty`, its tty is released and its
    /// starting uid forgotten. Returns the tty to release, if any.
    pub fn stop(&mut self, id: VmId, keep_tty: bool) -> Option<PathBuf> {
        let vm = self.get_mut(id)?;
        vm.state.running = false;
        vm.state.shutdown = false;
        // vmd leaves the paused bit of a VM killed while paused; a stopped
        // VM showing "paused" helps no one.
        vm.state.paused = false;
        vm.pid = None;
        if keep_tty {
            None
        } else {
            vm.uid = 0;
            vm.tty.take()
        }
    }

    /// Stop a config VM, remove an ad-hoc one (what vmd does whenever a VM
    /// ends).
    pub fn stop_or_remove(&mut self, id: VmId) -> Option<Released> {
        let vm = self.by_id(id)?;
        let waiter = vm.waiter;
        if vm.from_config {
            let tty = self.stop(id, false);
            if let Some(vm) = self.get_mut(id) {
                vm.waiter = None;
            }
            Some(Released {
                id,
                removed: false,
                tty,
                waiter,
            })
        } else {
            let vm = self.remove(id)?;
            Some(Released {
                id,
                removed: true,
                tty: vm.tty,
                waiter,
            })
        }
    }
}

/// An owner with only a uid (how requests from vmctl are owned).
pub(crate) fn owner_uid(uid: u32) -> Owner {
    Owner {
        uid: Some(uid),
        ..Owner::default()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the registry's tests.

    use super::*;

    pub fn host() -> HostLimits {
        HostLimits {
            max_vcpus: 8,
            max_mem_mib: 64 * 1024,
        }
    }

    pub fn reg() -> Registry {
        Registry::new(host())
    }

    pub fn root() -> Creds {
        Creds::root()
    }

    pub fn user(uid: u32) -> Creds {
        Creds {
            uid,
            gid: uid,
            groups: vec![uid],
        }
    }

    /// A bootable VM config.
    pub fn conf(name: &str) -> VmConf {
        let mut c = VmConf::new(name);
        c.boot = Some("/boot/vmlinuz".into());
        c
    }

    /// A config VM registered by root.
    pub fn add_config(reg: &mut Registry, c: VmConf) -> VmId {
        reg.register(c, &root(), true).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn ids_start_at_one_and_increase() {
        let mut r = reg();
        assert_eq!(r.claim_id("a", 0).unwrap(), 1);
        assert_eq!(r.claim_id("b", 0).unwrap(), 2);
    }

    #[test]
    fn same_name_and_uid_claims_the_same_id() {
        let mut r = reg();
        let a = r.claim_id("a", 1000).unwrap();
        r.claim_id("b", 1000).unwrap();
        assert_eq!(r.claim_id("a", 1000).unwrap(), a);
    }

    #[test]
    fn same_name_other_uid_claims_a_new_id() {
        let mut r = reg();
        let a = r.claim_id("a", 1000).unwrap();
        assert_ne!(r.claim_id("a", 1001).unwrap(), a);
    }

    #[test]
    fn claiming_a_64_byte_name_fails() {
        let mut r = reg();
        assert_eq!(r.claim_id(&"a".repeat(64), 0), Err(Error::NameTooLong));
    }

    #[test]
    fn id_is_stable_across_remove_and_register() {
        let mut r = reg();
        let id = r.register(conf("web"), &root(), false).unwrap();
        r.register(conf("other"), &root(), false).unwrap();
        r.remove(id).unwrap();
        assert!(r.by_id(id).is_none());
        assert_eq!(r.register(conf("web"), &root(), false).unwrap(), id);
    }

    #[test]
    fn lookups_by_id_name_and_pid() {
        let mut r = reg();
        let id = r.register(conf("web"), &root(), false).unwrap();
        r.get_mut(id).unwrap().pid = Some(4242);
        assert_eq!(r.by_id(id).unwrap().name(), "web");
        assert_eq!(r.by_name("web").unwrap().id, id);
        assert_eq!(r.by_pid(4242).unwrap().id, id);
        assert!(r.by_id(0).is_none());
        assert!(r.by_name("nope").is_none());
        assert_eq!(
            r.by_target(&VmTarget::Name("nope".into())).unwrap_err(),
            Error::NotFound
        );
        assert_eq!(r.by_target(&VmTarget::Id(id)).unwrap().id, id);
    }

    #[test]
    fn stopping_a_config_vm_keeps_it() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        let rel = r.stop_or_remove(id).unwrap();
        assert!(!rel.removed);
        assert!(r.by_id(id).is_some());
    }

    #[test]
    fn stopping_an_adhoc_vm_removes_it() {
        let mut r = reg();
        let id = r.register(conf("web"), &root(), false).unwrap();
        let rel = r.stop_or_remove(id).unwrap();
        assert!(rel.removed);
        assert!(r.by_id(id).is_none());
    }

    #[test]
    fn stop_releases_tty_unless_kept() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        r.set_tty(id, "/dev/pts/7".into()).unwrap();
        r.get_mut(id).unwrap().uid = 1000;
        assert_eq!(r.stop(id, true), None);
        assert_eq!(r.by_id(id).unwrap().tty, Some("/dev/pts/7".into()));
        assert_eq!(r.by_id(id).unwrap().uid, 1000);
        assert_eq!(r.stop(id, false), Some("/dev/pts/7".into()));
        assert_eq!(r.by_id(id).unwrap().uid, 0);
    }

    #[test]
    fn state_precedence_is_paused_waiting_stopping_running_stopped() {
        let mut s = StateFlags {
            running: true,
            shutdown: true,
            waiting: true,
            paused: true,
            ..StateFlags::default()
        };
        assert_eq!(s.shown(), VmState::Paused);
        s.paused = false;
        assert_eq!(s.shown(), VmState::Waiting);
        s.waiting = false;
        assert_eq!(s.shown(), VmState::Stopping);
        s.shutdown = false;
        assert_eq!(s.shown(), VmState::Running);
        s.running = false;
        assert_eq!(s.shown(), VmState::Stopped);
        s.disabled = true;
        assert_eq!(s.shown(), VmState::Stopped);
    }

    /// Registry invariants after any sequence of requests and events.
    fn check_invariants(r: &Registry) {
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for vm in r.vms() {
            assert_ne!(vm.id, 0);
            assert!(ids.insert(vm.id), "duplicate id {}", vm.id);
            assert!(names.insert(vm.name().to_string()), "duplicate name");
            if !vm.state.running {
                assert_eq!(vm.pid, None);
                assert!(!vm.state.paused && !vm.state.shutdown);
            }
            assert!(vm.vcpus() >= 1 && vm.vcpus() <= r.host.max_vcpus);
            assert_eq!(vm.memory() % MIB, 0);
            assert!(vm.memory_mib() >= 1);
            assert!(vm.conf.disks.len() <= vmconf::VM_MAX_DISKS_PER_VM);
            assert!(vm.conf.interfaces.len() <= vmconf::VM_MAX_NICS_PER_VM);
            for nic in &vm.conf.interfaces {
                assert!(nic.lladdr.is_some_and(|m| m != [0; 6]));
            }
        }
    }

    #[test]
    fn random_requests_and_events_keep_the_registry_consistent() {
        use proto::internal::ExitStatus;
        use std::time::{Duration, Instant};

        // A small deterministic generator: same sequence every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = ["a", "b", "c", "tpl", "-bad", ""];
        let users = [root(), user(1000), user(1001)];
        let mut r = reg();
        let mut tpl = conf("tpl");
        tpl.allow_instance.memory = true;
        tpl.allow_instance.instance = true;
        tpl.instance_owner = Some(vmconf::Owner {
            uid: Some(1000),
            ..vmconf::Owner::default()
        });
        let config = vmconf::Config {
            vms: vec![tpl, conf("a")],
            ..vmconf::Config::default()
        };
        let t0 = Instant::now();
        let mut first_ids = std::collections::HashMap::new();
        let (mut starts, mut restarts, mut instances) = (0, 0, 0);
        for step in 0..20_000u64 {
            let now = t0 + Duration::from_millis(step * 700);
            let creds = &users[next(3) as usize];
            let name = names[next(6) as usize];
            let target = if next(2) == 0 {
                VmTarget::Name(name.to_string())
            } else {
                VmTarget::Id(u32::try_from(next(8)).unwrap())
            };
            match next(12) {
                0 | 1 => {
                    let mut c = VmConf::new(name);
                    if next(2) == 0 {
                        c.boot = Some("/k".into());
                    }
                    if next(3) == 0 {
                        c.instance_of = Some(names[next(6) as usize].to_string());
                    }
                    c.memory = Some(next(5) * 300 * MIB + next(MIB));
                    c.cpus = u8::try_from(next(12)).ok().filter(|_| next(2) == 0);
                    c.min_interfaces = u32::try_from(next(7)).unwrap();
                    let instance = c.instance_of.is_some();
                    if let Ok(id) = r.start_request(c, creds) {
                        instances += u32::from(instance);
                        if let Ok(plan) = r.begin_start(id, now) {
                            r.started(plan.id, i32::try_from(step).unwrap()).unwrap();
                            starts += 1;
                        }
                    }
                }
                2 => {
                    let _ = r.terminate(&target, creds, next(2) == 0, next(2) == 0, next(4));
                }
                3 => {
                    let _ = r.wait(&target, creds, next(4));
                }
                4 => {
                    if let Ok(id) = r.pause(&target, creds) {
                        r.set_paused(id, true).unwrap();
                    }
                }
                5 => {
                    if let Ok(id) = r.unpause(&target, creds) {
                        r.set_paused(id, false).unwrap();
                    }
                }
                6 | 7 => {
                    let id = u32::try_from(next(8)).unwrap();
                    let status = match next(3) {
                        0 => ExitStatus::Code(libc::EAGAIN),
                        1 => ExitStatus::Code(0),
                        _ => ExitStatus::Signal(9),
                    };
                    if let ExitOutcome::Restart(plan) = r.on_exit(id, status, now) {
                        r.started(plan.id, 1).unwrap();
                        restarts += 1;
                    }
                }
                8 => {
                    let mode = if next(2) == 0 {
                        LoadMode::Load
                    } else {
                        LoadMode::Reload
                    };
                    r.apply_config(&config, mode).unwrap();
                }
                9 => {
                    let batch = r.next_batch(2);
                    for id in batch.start {
                        if r.begin_start(id, now).is_ok() {
                            r.started(id, 2).unwrap();
                            starts += 1;
                        }
                    }
                }
                10 => {
                    if next(20) == 0 {
                        r.reset(proto::ResetKind::Vms);
                    }
                }
                _ => {
                    let _ = r.status(Some(&target), next(2) == 0);
                    r.client_gone(next(4));
                }
            }
            check_invariants(&r);
            // Ids stay with (name, registering user) for the daemon's life.
            for vm in r.vms() {
                let key = (vm.name().to_string(), vm.user.unwrap_or(0));
                assert_eq!(*first_ids.entry(key).or_insert(vm.id), vm.id);
            }
        }
        // The run went through the interesting paths, not only refusals.
        assert!(starts > 100 && restarts > 10 && instances > 10);
    }

    #[test]
    fn error_codes_follow_vmd() {
        use proto::codes::*;
        assert_eq!(Error::NotFound.code(), libc::ENOENT);
        assert_eq!(Error::StopNotRunning.code(), VMD_VM_STOP_INVALID);
        assert_eq!(Error::InvalidTemplate.code(), VMD_PARENT_INVALID);
        assert_eq!(Error::NoDevices.code(), VMD_DISK_MISSING);
        assert_eq!(Error::NoInstancePermission.code(), libc::ENAMETOOLONG);
        assert_eq!(Error::RestartedTooQuickly.code(), libc::EPERM);
        assert_eq!(Error::CdromInvalid("/x".into()).code(), VMD_CDROM_INVALID);
        let nested = Error::ConfigVm {
            name: "x".into(),
            source: Box::new(Error::LladdrReused),
        };
        assert_eq!(nested.code(), libc::EBUSY);
        assert_eq!(message(VMD_PARENT_INVALID), "invalid template");
    }
}
