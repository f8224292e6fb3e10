//! Starting, stopping, pausing, waiting and restarting: the decisions of
//! vmd.c's `vmd_dispatch_control` and `vmd_dispatch_vmm`, vmm.c's answers to
//! a stop request, and config.c's `config_setvm` checks (user limits, the
//! restart rate limit, the files to open).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proto::internal::ExitStatus;

use super::perm::{check_perm, Access, FileCheck, FileRole};
use super::register::has_options;
use super::{Creds, Error, Registry, VmId, VmTarget};

/// A VM that starts again within this many seconds of its last start
/// counts as a quick restart (vmd's `VM_START_RATE_SEC`).
pub const VM_START_RATE_SEC: u64 = 6;
/// After this many quick restarts in a row the VM is refused (vmd's
/// `VM_START_RATE_LIMIT`): "restarted too quickly".
pub const VM_START_RATE_LIMIT: u32 = 3;

/// A VM's restart rate limit (vmd's `vm_start_tv` and `vm_start_limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartLimit {
    last_start: Option<Instant>,
    quick: u32,
}

impl RestartLimit {
    /// Note a start at `now` (a monotonic time). Fails once
    /// [`VM_START_RATE_LIMIT`] starts in a row each came less than
    /// [`VM_START_RATE_SEC`] after the one before; a slow start resets the
    /// count.
    pub fn note_start(&mut self, now: Instant) -> Result<(), Error> {
        if let Some(last) = self.last_start {
            if now.saturating_duration_since(last) < Duration::from_secs(VM_START_RATE_SEC) {
                self.quick += 1;
            } else {
                self.quick = 0;
            }
            if self.quick >= VM_START_RATE_LIMIT {
                return Err(Error::RestartedTooQuickly);
            }
        }
        self.last_start = Some(now);
        Ok(())
    }
}

/// What the daemon must do to start a VM the registry accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// The VM.
    pub id: VmId,
    /// The uid it runs for: owner of its tty (vmd's `vm_uid`).
    pub uid: u32,
    /// Its files, in the order the `vm` process wants them: kernel,
    /// initrd, disks, cdrom. Open each with [`FileCheck::open`].
    pub files: Vec<FileCheck>,
    /// The tty it keeps across a reboot; `None`: open a new one and
    /// record it with [`Registry::set_tty`].
    pub tty: Option<PathBuf>,
}

/// A start that was refused after the VM was taken down (a config VM is
/// stopped, an ad-hoc one removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// Why.
    pub error: Error,
    /// What became of the VM; `None` when nothing changed (it was already
    /// running).
    pub released: Option<Released>,
}

/// What became of a VM that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The VM.
    pub id: VmId,
    /// Removed from the registry (ad-hoc VM), else only stopped.
    pub removed: bool,
    /// Its tty, to give back (chown root, mode 0666, close).
    pub tty: Option<PathBuf>,
    /// The client waiting for it to stop, to answer "terminated".
    pub waiter: Option<u64>,
}

/// How to stop a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// Ask the guest: the ACPI power button (vmd: vmmci shutdown).
    PowerButton,
    /// End it now (`stop -f`).
    Kill,
}

/// The answer to a stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopDecision {
    /// The VM.
    pub id: VmId,
    /// What to send its process.
    pub action: StopAction,
    /// The reply waits until the VM has stopped (`stop -w`): the client is
    /// its waiter now.
    pub deferred: bool,
}

/// What to do after a `vm` process ended (vmd's `TERMINATE_VM_EVENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The VM is not (or no longer) registered: nothing to do.
    Unknown,
    /// It stopped (config VM) or was removed (ad-hoc VM).
    Stopped(Released),
    /// The guest rebooted: start it again, with its tty.
    Restart(StartPlan),
    /// The guest rebooted but restarts too quickly (or hit a limit): it
    /// was stopped or removed instead.
    RestartRefused {
        /// Why.
        error: Error,
        /// What became of it.
        released: Released,
    },
}

impl Registry {
    /// A client's `vmctl start` (vmd's `IMSG_VMDOP_START_VM_REQUEST`):
    /// register the VM, or, for a request naming only an existing stopped
    /// VM the client may use, pick that one. Then call
    /// [`Registry::begin_start`]. A request with options for an existing VM
    /// is `EALREADY`, as in vmd: it is not updated.
    pub fn start_request(&mut self, conf: vmconf::VmConf, creds: &Creds) -> Result<VmId, Error> {
        let bare = !has_options(&conf);
        match self.register(conf, creds, false) {
            Err(Error::Exists {
                id, running: false, ..
            }) if bare => Ok(id),
            Err(Error::Exists { running: true, .. }) => Err(Error::AlreadyRunning),
            other => other,
        }
    }

    /// Check and mark a VM as starting (config.c's `config_setvm`): not
    /// already running, within its user's limits and its restart rate
    /// limit. On success it is running (until [`Registry::start_failed`] or
    /// [`Registry::on_exit`]) and the plan lists the files to open; on
    /// failure other than "already running" the VM was stopped or removed.
    pub fn begin_start(&mut self, id: VmId, now: Instant) -> Result<StartPlan, StartFailure> {
        let fail = |error| StartFailure {
            error,
            released: None,
        };
        let vm = self.by_id(id).ok_or_else(|| fail(Error::NotFound))?;
        if vm.state.running {
            return Err(fail(Error::AlreadyRunning));
        }
        if let Err(error) = self.check_user_limits(id) {
            return Err(self.start_refused(id, error));
        }
        let Some(vm) = self.get_mut(id) else {
            return Err(fail(Error::NotFound));
        };
        if let Err(error) = vm.restarts.note_start(now) {
            return Err(self.start_refused(id, error));
        }
        let Some(vm) = self.get_mut(id) else {
            return Err(fail(Error::NotFound));
        };
        // vmd starts a VM as its configured owner, the requester for
        // ad-hoc VMs; a restart keeps the uid it had.
        if vm.uid == 0 || vm.tty.is_none() {
            vm.uid = vm.owner_uid();
        }
        vm.state.running = true;
        vm.state.waiting = false;
        vm.state.shutdown = false;
        vm.state.paused = false;
        let uid = vm.uid;
        let check = |flag: bool| (flag && uid != 0).then_some(uid);
        let c = &vm.conf;
        let mut files = Vec::new();
        if let Some(p) = &c.boot {
            files.push(FileCheck {
                role: FileRole::Kernel,
                path: p.clone(),
                access: Access::Read,
                check_user: check(vm.checkaccess.kernel),
            });
        }
        if let Some(p) = &c.initrd {
            files.push(FileCheck {
                role: FileRole::Initrd,
                path: p.clone(),
                access: Access::Read,
                check_user: check(vm.checkaccess.kernel),
            });
        }
        for (i, d) in c.disks.iter().enumerate() {
            files.push(FileCheck {
                role: FileRole::Disk(i),
                path: d.path.clone(),
                access: Access::ReadWrite,
                check_user: check(vm.checkaccess.disk),
            });
        }
        if let Some(p) = &c.cdrom {
            files.push(FileCheck {
                role: FileRole::Cdrom,
                path: p.clone(),
                access: Access::Read,
                check_user: check(vm.checkaccess.cdrom),
            });
        }
        Ok(StartPlan {
            id,
            uid,
            files,
            tty: vm.tty.clone(),
        })
    }

    fn start_refused(&mut self, id: VmId, error: Error) -> StartFailure {
        StartFailure {
            error,
            released: self.stop_or_remove(id),
        }
    }

    /// Sum the resources of the running VMs of the VM's user with this one
    /// and compare with the configured per-user limits (vmd's
    /// `user_checklimit`). Root's and config VMs count against nothing.
    fn check_user_limits(&self, id: VmId) -> Result<(), Error> {
        let Some(vm) = self.by_id(id) else {
            return Ok(());
        };
        let Some(uid) = vm.user else {
            return Ok(());
        };
        let (mut cpus, mut mem, mut ifs) =
            (u64::from(vm.vcpus()), vm.memory_mib(), u64::from(vm.nics()));
        for other in self
            .vms()
            .filter(|o| o.user == Some(uid) && o.state.running && o.id != id)
        {
            cpus += u64::from(other.vcpus());
            mem += other.memory_mib();
            ifs += u64::from(other.nics());
        }
        let limits = &self.global.user_limits;
        let what = if cpus > u64::from(limits.max_cpus) {
            "cpu"
        } else if mem > limits.max_mem_mib {
            "memory"
        } else if ifs > u64::from(limits.max_ifs) {
            "interface"
        } else {
            return Ok(());
        };
        Err(Error::UserLimit { uid, what })
    }

    /// The `vm` process of a starting VM runs (vmm's start response).
    pub fn started(&mut self, id: VmId, pid: i32) -> Result<(), Error> {
        self.get_mut(id).ok_or(Error::NotFound)?.pid = Some(pid);
        Ok(())
    }

    /// A start could not be completed (a file could not be opened, the
    /// tty not created, the vmm refused): stop a config VM, remove an
    /// ad-hoc one.
    pub fn start_failed(&mut self, id: VmId) -> Option<Released> {
        self.stop_or_remove(id)
    }

    /// A VM the client names and may act on.
    fn permitted(&self, target: &VmTarget, creds: &Creds) -> Result<VmId, Error> {
        let vm = self.by_target(target)?;
        if !check_perm(Some(vm), vm.conf.owner.as_ref(), creds) {
            return Err(Error::PermissionDenied);
        }
        Ok(vm.id)
    }

    /// `vmctl stop [-f] [-w]` (vmd's `IMSG_VMDOP_TERMINATE_VM_REQUEST`):
    /// unknown VM `ENOENT`; not permitted `EPERM`; already stopping without
    /// `force` `EALREADY`; not running `VMD_VM_STOP_INVALID`; `wait` while
    /// another client waits `EINTR`. On success the VM is marked stopping.
    pub fn terminate(
        &mut self,
        target: &VmTarget,
        creds: &Creds,
        force: bool,
        wait: bool,
        client: u64,
    ) -> Result<StopDecision, Error> {
        let id = self.permitted(target, creds)?;
        let Some(vm) = self.get_mut(id) else {
            return Err(Error::NotFound);
        };
        if vm.state.shutdown && !force {
            return Err(Error::AlreadyStopping);
        }
        if !vm.state.running {
            return Err(Error::StopNotRunning);
        }
        if wait {
            match vm.waiter {
                Some(other) if other != client => return Err(Error::AlreadyWaiting),
                _ => vm.waiter = Some(client),
            }
        }
        vm.state.shutdown = true;
        Ok(StopDecision {
            id,
            action: if force {
                StopAction::Kill
            } else {
                StopAction::PowerButton
            },
            deferred: wait,
        })
    }

    /// `vmctl stop -a`: every running VM the client may act on and that is
    /// not already stopping (unless `force`), each marked stopping.
    pub fn terminate_all(&mut self, creds: &Creds, force: bool) -> Vec<StopDecision> {
        let ids: Vec<VmId> = self
            .vms()
            .filter(|vm| vm.state.running && (force || !vm.state.shutdown))
            .filter(|vm| check_perm(Some(vm), vm.conf.owner.as_ref(), creds))
            .map(|vm| vm.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                self.terminate(&VmTarget::Id(id), creds, force, false, 0)
                    .ok()
            })
            .collect()
    }

    /// The stop request never reached the VM (vmm answered an error): it
    /// is not stopping after all, and nobody waits for it.
    pub fn stop_not_delivered(&mut self, id: VmId) {
        if let Some(vm) = self.get_mut(id) {
            vm.state.shutdown = false;
            vm.waiter = None;
        }
    }

    /// `vmctl wait`: the client waits until the VM stops. Unknown `ENOENT`,
    /// not permitted `EPERM`, not running `VMD_VM_STOP_INVALID`, another
    /// client already waiting `EINTR`.
    pub fn wait(&mut self, target: &VmTarget, creds: &Creds, client: u64) -> Result<VmId, Error> {
        let id = self.permitted(target, creds)?;
        let Some(vm) = self.get_mut(id) else {
            return Err(Error::NotFound);
        };
        if !vm.state.running {
            return Err(Error::StopNotRunning);
        }
        match vm.waiter {
            Some(other) if other != client => Err(Error::AlreadyWaiting),
            _ => {
                vm.waiter = Some(client);
                Ok(id)
            }
        }
    }

    /// A client went away: it waits for nothing any more.
    pub fn client_gone(&mut self, client: u64) {
        for vm in self.vms.iter_mut().filter(|vm| vm.waiter == Some(client)) {
            vm.waiter = None;
        }
    }

    /// `vmctl pause`: which VM to pause. Unknown `ENOENT`, not permitted
    /// `EPERM`, not running `EINVAL`, already paused `EALREADY`. Mark it
    /// with [`Registry::set_paused`] once the vmm confirms.
    pub fn pause(&self, target: &VmTarget, creds: &Creds) -> Result<VmId, Error> {
        let id = self.permitted(target, creds)?;
        let vm = self.by_id(id).ok_or(Error::NotFound)?;
        if !vm.state.running {
            return Err(Error::NotRunning);
        }
        if vm.state.paused {
            return Err(Error::AlreadyPaused);
        }
        Ok(id)
    }

    /// `vmctl unpause`: which VM to resume. Unknown `ENOENT`, not
    /// permitted `EPERM`, not running or not paused `EINVAL`.
    pub fn unpause(&self, target: &VmTarget, creds: &Creds) -> Result<VmId, Error> {
        let id = self.permitted(target, creds)?;
        let vm = self.by_id(id).ok_or(Error::NotFound)?;
        if !vm.state.running {
            return Err(Error::NotRunning);
        }
        if !vm.state.paused {
            return Err(Error::NotPaused);
        }
        Ok(id)
    }

    /// The vmm paused (`true`) or resumed (`false`) the VM.
    pub fn set_paused(&mut self, id: VmId, paused: bool) -> Result<(), Error> {
        self.get_mut(id).ok_or(Error::NotFound)?.state.paused = paused;
        Ok(())
    }

    /// `vmctl console`: the tty of a running VM the client may use.
    pub fn console(&self, target: &VmTarget, creds: &Creds) -> Result<(VmId, PathBuf), Error> {
        let id = self.permitted(target, creds)?;
        let vm = self.by_id(id).ok_or(Error::NotFound)?;
        match (&vm.tty, vm.state.running) {
            (Some(tty), true) => Ok((id, tty.clone())),
            _ => Err(Error::NotRunning),
        }
    }

    /// A VM's process ended (vmd's `TERMINATE_VM_EVENT`). A guest reboot
    /// (exit code `EAGAIN`) restarts the VM keeping its tty — unless a
    /// stop was asked for (vmm.c: no reboot on a pending shutdown) or a
    /// boot device was forced; the restart is refused past the rate limit.
    /// Anything else stops a config VM and removes an ad-hoc one.
    pub fn on_exit(&mut self, id: VmId, status: ExitStatus, now: Instant) -> ExitOutcome {
        let Some(vm) = self.by_id(id) else {
            return ExitOutcome::Unknown;
        };
        let reboot = status == ExitStatus::Code(libc::EAGAIN)
            && !vm.state.shutdown
            && vm.conf.boot_device.is_none();
        if !reboot {
            return match self.stop_or_remove(id) {
                Some(released) => ExitOutcome::Stopped(released),
                None => ExitOutcome::Unknown,
            };
        }
        self.stop(id, true);
        match self.begin_start(id, now) {
            Ok(plan) => ExitOutcome::Restart(plan),
            Err(StartFailure {
                error,
                released: Some(released),
            }) => ExitOutcome::RestartRefused { error, released },
            Err(StartFailure { released: None, .. }) => ExitOutcome::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use vmconf::{BootDevice, InstancePerms, Owner, VmConf};

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;

    fn t0() -> Instant {
        Instant::now()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn owned_by(name: &str, uid: u32) -> VmConf {
        let mut c = conf(name);
        c.owner = Some(Owner {
            uid: Some(uid),
            ..Owner::default()
        });
        c
    }

    fn running(r: &mut Registry, id: VmId, now: Instant) -> StartPlan {
        let plan = r.begin_start(id, now).unwrap();
        r.started(id, 100 + i32::try_from(id).unwrap()).unwrap();
        plan
    }

    #[test]
    fn three_quick_restarts_are_allowed_the_fourth_refused() {
        let mut l = RestartLimit::default();
        let t = t0();
        l.note_start(t).unwrap();
        l.note_start(t + secs(1)).unwrap();
        l.note_start(t + secs(2)).unwrap();
        assert_eq!(l.note_start(t + secs(3)), Err(Error::RestartedTooQuickly));
    }

    #[test]
    fn a_slow_restart_resets_the_count() {
        let mut l = RestartLimit::default();
        let t = t0();
        l.note_start(t).unwrap();
        l.note_start(t + secs(1)).unwrap();
        l.note_start(t + secs(2)).unwrap();
        l.note_start(t + secs(2 + VM_START_RATE_SEC)).unwrap();
        l.note_start(t + secs(9)).unwrap();
        l.note_start(t + secs(10)).unwrap();
    }

    #[test]
    fn start_of_existing_stopped_vm_without_options_picks_it() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        assert_eq!(r.start_request(VmConf::new("web"), &user(ALICE)), Ok(id));
    }

    #[test]
    fn start_of_running_vm_is_ealready() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        running(&mut r, id, t0());
        let err = r
            .start_request(VmConf::new("web"), &user(ALICE))
            .unwrap_err();
        assert_eq!(err.code(), libc::EALREADY);
    }

    #[test]
    fn start_with_options_of_existing_stopped_vm_is_ealready() {
        let mut r = reg();
        add_config(&mut r, conf("web"));
        let mut c = VmConf::new("web");
        c.memory = Some(64 << 20);
        let err = r.start_request(c, &root()).unwrap_err();
        assert_eq!(err.code(), libc::EALREADY);
    }

    #[test]
    fn start_of_someone_elses_vm_is_eperm() {
        let mut r = reg();
        add_config(&mut r, owned_by("web", ALICE));
        assert_eq!(
            r.start_request(VmConf::new("web"), &user(BOB)),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn begin_start_of_running_vm_is_ealready_and_changes_nothing() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        let f = r.begin_start(id, t0()).unwrap_err();
        assert_eq!(f.error, Error::AlreadyRunning);
        assert_eq!(f.released, None);
        assert!(r.by_id(id).unwrap().state.running);
    }

    #[test]
    fn begin_start_lists_files_in_vm_order() {
        let mut r = reg();
        let mut c = conf("web");
        c.initrd = Some("/initrd".into());
        c.cdrom = Some("/x.iso".into());
        c.disks = vec![vmconf::DiskConf {
            path: "/d.img".into(),
            format: vmconf::DiskFormat::Raw,
        }];
        let id = add_config(&mut r, c);
        let plan = r.begin_start(id, t0()).unwrap();
        let roles: Vec<_> = plan.files.iter().map(|f| (f.role, f.access)).collect();
        assert_eq!(
            roles,
            [
                (FileRole::Kernel, Access::Read),
                (FileRole::Initrd, Access::Read),
                (FileRole::Disk(0), Access::ReadWrite),
                (FileRole::Cdrom, Access::Read)
            ]
        );
        // A config VM's files are not checked against a user.
        assert!(plan.files.iter().all(|f| f.check_user.is_none()));
        assert!(r.by_id(id).unwrap().state.running);
    }

    fn template_for_alice(r: &mut Registry) {
        let mut c = conf("tpl");
        c.allow_instance = InstancePerms {
            disk: true,
            cpus: true,
            memory: true,
            interface: true,
            ..InstancePerms::default()
        };
        c.instance_owner = Some(Owner {
            uid: Some(ALICE),
            ..Owner::default()
        });
        add_config(r, c);
    }

    fn instance(name: &str, cpus: u8) -> VmConf {
        let mut c = VmConf::new(name);
        c.instance_of = Some("tpl".into());
        c.cpus = Some(cpus);
        c
    }

    #[test]
    fn instance_files_it_chose_are_checked_as_its_user() {
        let mut r = reg();
        template_for_alice(&mut r);
        let mut c = instance("c1", 1);
        c.disks = vec![vmconf::DiskConf {
            path: "/home/alice/c1.img".into(),
            format: vmconf::DiskFormat::Raw,
        }];
        let id = r.start_request(c, &user(ALICE)).unwrap();
        let plan = r.begin_start(id, t0()).unwrap();
        let disk = plan.files.iter().find(|f| f.role == FileRole::Disk(0));
        assert_eq!(disk.unwrap().check_user, Some(ALICE));
        let kernel = plan.files.iter().find(|f| f.role == FileRole::Kernel);
        assert_eq!(kernel.unwrap().check_user, None);
        assert_eq!(plan.uid, ALICE);
    }

    #[test]
    fn user_cpu_limit_counts_running_vms() {
        let mut r = reg();
        template_for_alice(&mut r);
        let a = r.start_request(instance("a", 3), &user(ALICE)).unwrap();
        running(&mut r, a, t0());
        let b = r.start_request(instance("b", 2), &user(ALICE)).unwrap();
        let f = r.begin_start(b, t0()).unwrap_err();
        assert_eq!(
            f.error,
            Error::UserLimit {
                uid: ALICE,
                what: "cpu"
            }
        );
        assert_eq!(f.error.code(), libc::EPERM);
        // The refused ad-hoc instance is gone.
        assert!(f.released.unwrap().removed);
        assert!(r.by_id(b).is_none());
    }

    #[test]
    fn user_memory_limit_is_configurable() {
        let mut r = reg();
        r.global.user_limits.max_mem_mib = 256;
        template_for_alice(&mut r);
        let mut c = instance("a", 1);
        c.memory = Some(512 << 20);
        let a = r.start_request(c, &user(ALICE)).unwrap();
        let f = r.begin_start(a, t0()).unwrap_err();
        assert_eq!(
            f.error,
            Error::UserLimit {
                uid: ALICE,
                what: "memory"
            }
        );
    }

    #[test]
    fn user_interface_limit_counts_nics() {
        let mut r = reg();
        r.global.user_limits.max_ifs = 3;
        template_for_alice(&mut r);
        let mut c = instance("a", 1);
        c.min_interfaces = 2;
        let a = r.start_request(c, &user(ALICE)).unwrap();
        running(&mut r, a, t0());
        let mut c = instance("b", 1);
        c.min_interfaces = 2;
        let b = r.start_request(c, &user(ALICE)).unwrap();
        assert_eq!(
            r.begin_start(b, t0()).unwrap_err().error,
            Error::UserLimit {
                uid: ALICE,
                what: "interface"
            }
        );
    }

    #[test]
    fn stopped_vms_do_not_count_against_limits() {
        let mut r = reg();
        template_for_alice(&mut r);
        let a = r.start_request(instance("a", 4), &user(ALICE)).unwrap();
        running(&mut r, a, t0());
        r.on_exit(a, ExitStatus::Code(0), t0());
        let b = r.start_request(instance("b", 4), &user(ALICE)).unwrap();
        assert!(r.begin_start(b, t0()).is_ok());
    }

    #[test]
    fn stop_of_unknown_vm_is_enoent() {
        let mut r = reg();
        let err = r
            .terminate(&VmTarget::Name("x".into()), &root(), false, false, 1)
            .unwrap_err();
        assert_eq!(err.code(), libc::ENOENT);
    }

    #[test]
    fn stop_of_stopped_vm_is_stop_invalid() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        let err = r
            .terminate(&VmTarget::Id(id), &root(), false, false, 1)
            .unwrap_err();
        assert_eq!(err.code(), proto::codes::VMD_VM_STOP_INVALID);
    }

    #[test]
    fn stop_of_stopping_vm_is_ealready_unless_forced() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        let d = r
            .terminate(&VmTarget::Id(id), &root(), false, false, 1)
            .unwrap();
        assert_eq!(d.action, StopAction::PowerButton);
        assert_eq!(r.by_id(id).unwrap().state.shown(), proto::VmState::Stopping);
        assert_eq!(
            r.terminate(&VmTarget::Id(id), &root(), false, false, 1),
            Err(Error::AlreadyStopping)
        );
        let d = r
            .terminate(&VmTarget::Id(id), &root(), true, false, 1)
            .unwrap();
        assert_eq!(d.action, StopAction::Kill);
    }

    #[test]
    fn stop_by_other_user_is_eperm() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        running(&mut r, id, t0());
        assert_eq!(
            r.terminate(&VmTarget::Id(id), &user(BOB), true, false, 1),
            Err(Error::PermissionDenied)
        );
        assert!(r
            .terminate(&VmTarget::Id(id), &user(ALICE), true, false, 1)
            .is_ok());
    }

    #[test]
    fn stop_wait_defers_the_reply_to_the_exit() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        let d = r
            .terminate(&VmTarget::Id(id), &root(), false, true, 7)
            .unwrap();
        assert!(d.deferred);
        match r.on_exit(id, ExitStatus::Code(0), t0()) {
            ExitOutcome::Stopped(rel) => assert_eq!(rel.waiter, Some(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn undelivered_stop_can_be_asked_again() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        r.terminate(&VmTarget::Id(id), &root(), false, true, 3)
            .unwrap();
        r.stop_not_delivered(id);
        assert_eq!(r.by_id(id).unwrap().waiter, None);
        assert!(r
            .terminate(&VmTarget::Id(id), &root(), false, false, 1)
            .is_ok());
    }

    #[test]
    fn stop_all_picks_the_clients_running_vms() {
        let mut r = reg();
        let a = add_config(&mut r, owned_by("a", ALICE));
        let b = add_config(&mut r, owned_by("b", BOB));
        let c = add_config(&mut r, owned_by("c", ALICE));
        running(&mut r, a, t0());
        running(&mut r, b, t0());
        let ids: Vec<_> = r
            .terminate_all(&user(ALICE), false)
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, [a]);
        assert!(!r.by_id(c).unwrap().state.shutdown);
    }

    #[test]
    fn starting_a_waiting_vm_takes_it_out_of_the_staggered_start() {
        let mut r = reg();
        let cfg = vmconf::Config {
            vms: vec![owned_by("a", ALICE), conf("b")],
            ..Default::default()
        };
        r.apply_config(&cfg, super::super::LoadMode::Load).unwrap();
        let a = r.start_request(VmConf::new("a"), &user(ALICE)).unwrap();
        running(&mut r, a, t0());
        let batch = r.next_batch(8);
        assert_eq!(batch.start, [r.by_name("b").unwrap().id]);
    }

    #[test]
    fn wait_by_other_user_is_eperm() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        running(&mut r, id, t0());
        assert_eq!(
            r.wait(&VmTarget::Name("web".into()), &user(BOB), 1),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            r.wait(&VmTarget::Name("web".into()), &user(ALICE), 1),
            Ok(id)
        );
    }

    #[test]
    fn second_waiter_is_eintr() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        assert_eq!(r.wait(&VmTarget::Id(id), &root(), 1), Ok(id));
        assert_eq!(
            r.wait(&VmTarget::Id(id), &root(), 2),
            Err(Error::AlreadyWaiting)
        );
        r.client_gone(1);
        assert_eq!(r.wait(&VmTarget::Id(id), &root(), 2), Ok(id));
    }

    #[test]
    fn wait_on_stopped_vm_is_stop_invalid() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        assert_eq!(
            r.wait(&VmTarget::Id(id), &root(), 1),
            Err(Error::StopNotRunning)
        );
    }

    #[test]
    fn pause_of_paused_vm_is_ealready() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        assert_eq!(r.pause(&VmTarget::Id(id), &root()), Ok(id));
        r.set_paused(id, true).unwrap();
        let err = r.pause(&VmTarget::Id(id), &root()).unwrap_err();
        assert_eq!(err.code(), libc::EALREADY);
        assert_eq!(r.unpause(&VmTarget::Id(id), &root()), Ok(id));
    }

    #[test]
    fn pause_of_stopped_vm_and_unpause_of_running_are_einval() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        assert_eq!(
            r.pause(&VmTarget::Id(id), &root()).unwrap_err().code(),
            libc::EINVAL
        );
        running(&mut r, id, t0());
        assert_eq!(r.unpause(&VmTarget::Id(id), &root()), Err(Error::NotPaused));
    }

    #[test]
    fn pause_by_other_user_is_eperm() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        running(&mut r, id, t0());
        assert_eq!(
            r.pause(&VmTarget::Name("web".into()), &user(BOB)),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn console_needs_permission_and_a_running_vm() {
        let mut r = reg();
        let id = add_config(&mut r, owned_by("web", ALICE));
        assert_eq!(
            r.console(&VmTarget::Id(id), &user(ALICE)),
            Err(Error::NotRunning)
        );
        running(&mut r, id, t0());
        r.set_tty(id, "/dev/pts/4".into()).unwrap();
        assert_eq!(
            r.console(&VmTarget::Id(id), &user(BOB)),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            r.console(&VmTarget::Id(id), &user(ALICE)),
            Ok((id, "/dev/pts/4".into()))
        );
    }

    #[test]
    fn reboot_restarts_keeping_the_tty() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        let t = t0();
        running(&mut r, id, t);
        r.set_tty(id, "/dev/pts/9".into()).unwrap();
        match r.on_exit(id, ExitStatus::Code(libc::EAGAIN), t + secs(60)) {
            ExitOutcome::Restart(plan) => assert_eq!(plan.tty, Some("/dev/pts/9".into())),
            other => panic!("{other:?}"),
        }
        let vm = r.by_id(id).unwrap();
        assert!(vm.state.running);
        assert_eq!(vm.pid, None);
    }

    #[test]
    fn fourth_quick_reboot_is_refused_and_stops_the_vm() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        let t = t0();
        running(&mut r, id, t);
        r.set_tty(id, "/dev/pts/9".into()).unwrap();
        for s in 1..=2 {
            let out = r.on_exit(id, ExitStatus::Code(libc::EAGAIN), t + secs(s));
            assert!(matches!(out, ExitOutcome::Restart(_)), "{out:?}");
        }
        match r.on_exit(id, ExitStatus::Code(libc::EAGAIN), t + secs(3)) {
            ExitOutcome::RestartRefused { error, released } => {
                assert_eq!(error, Error::RestartedTooQuickly);
                assert!(!released.removed);
                assert_eq!(released.tty, Some("/dev/pts/9".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.by_id(id).unwrap().state.running);
    }

    #[test]
    fn reboot_with_forced_boot_device_stops_instead() {
        let mut r = reg();
        let mut c = conf("web");
        c.boot_device = Some(BootDevice::Cdrom);
        c.cdrom = Some("/x.iso".into());
        let id = add_config(&mut r, c);
        running(&mut r, id, t0());
        assert!(matches!(
            r.on_exit(id, ExitStatus::Code(libc::EAGAIN), t0() + secs(60)),
            ExitOutcome::Stopped(_)
        ));
    }

    #[test]
    fn reboot_after_stop_request_stops_instead() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        r.terminate(&VmTarget::Id(id), &root(), false, false, 1)
            .unwrap();
        assert!(matches!(
            r.on_exit(id, ExitStatus::Code(libc::EAGAIN), t0() + secs(60)),
            ExitOutcome::Stopped(_)
        ));
    }

    #[test]
    fn exit_of_adhoc_vm_removes_it() {
        let mut r = reg();
        let id = r.start_request(conf("tmp"), &root()).unwrap();
        running(&mut r, id, t0());
        match r.on_exit(id, ExitStatus::Signal(9), t0()) {
            ExitOutcome::Stopped(rel) => assert!(rel.removed),
            other => panic!("{other:?}"),
        }
        assert!(r.by_id(id).is_none());
        assert_eq!(
            r.on_exit(id, ExitStatus::Code(0), t0()),
            ExitOutcome::Unknown
        );
    }

    #[test]
    fn paused_vm_that_exits_is_shown_stopped() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        running(&mut r, id, t0());
        r.set_paused(id, true).unwrap();
        r.on_exit(id, ExitStatus::Signal(9), t0());
        assert_eq!(r.by_id(id).unwrap().state.shown(), proto::VmState::Stopped);
    }
}
