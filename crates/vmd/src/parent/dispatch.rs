//! What the parent does with each request and report (vmd's
//! `vmd_dispatch_control`, `vmd_dispatch_vmm`, `config_setvm`,
//! `start_vm_batch`, `vmd_reload`): ask the registry, open the files,
//! create the console, tell vmm, answer the client.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use proto::internal::{ParentToControl, ParentToVmm, PeerCred, VmSpec, VmmToParent};
use proto::{LogLevel, Request, Response, VmTarget};
use vmconf::Config;

use super::daemon::{Parent, Waiter};
use super::registry::{
    online_cpus, Access, ConfigAction, Creds, Error, ExitOutcome, FileCheck, FileRole, LoadMode,
    Released, StartFailure, StartPlan, StopAction, VmId,
};
use super::tty::Pty;

/// The BIOS image booted when a VM names no kernel (vmd's
/// `/etc/firmware/vmm-bios`): Debian's SeaBIOS.
pub const BIOS_PATH: &str = "/usr/share/seabios/bios.bin";

/// The kernel command line when a VM has none: the console on COM1.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

fn err(code: i32) -> Response {
    Response::Error { code }
}

impl Parent {
    /// Handles one client request; `None` when the answer comes later.
    pub(super) fn dispatch_control(
        &mut self,
        client: u64,
        peer: PeerCred,
        req: Request,
    ) -> Option<Response> {
        let creds = Creds::lookup(peer.uid, peer.gid);
        tracing::debug!("request {} from uid {}", req.name(), peer.uid);
        if req.root_only() && !creds.is_root() {
            // control refuses these already; never trust one layer alone.
            tracing::warn!("denied request {} from uid {}", req.name(), peer.uid);
            return Some(err(libc::EPERM));
        }
        let result = match req {
            Request::Start(start) => self.start_request(client, &creds, *start.conf),
            Request::Stop {
                target: VmTarget::All,
                force,
                wait,
            } => self.stop_all(client, &creds, force, wait),
            Request::Stop {
                target,
                force,
                wait,
            } => self.stop_request(client, &creds, &target, force, wait),
            Request::Wait(target) => self.registry.wait(&target, &creds, client).map(|_| None),
            Request::Pause(target) => self.pause_request(client, &creds, &target, true),
            Request::Unpause(target) => self.pause_request(client, &creds, &target, false),
            Request::Status { target } => self
                .registry
                .status(target.as_ref(), false)
                .map(|rows| Some(Response::VmInfo(rows))),
            Request::Console(target) => self.registry.console(&target, &creds).map(|(id, tty)| {
                Some(Response::Console {
                    id,
                    tty: tty.display().to_string(),
                })
            }),
            Request::Load(path) => {
                return Some(self.load(Some(&path)).map_or_else(
                    |text| {
                        tracing::warn!("load {} failed: {text}", path.display());
                        err(libc::EINVAL)
                    },
                    |()| Response::Ok,
                ))
            }
            Request::Reload => {
                return Some(self.load(None).map_or_else(
                    |text| {
                        tracing::warn!("reload failed, keeping the configuration: {text}");
                        err(libc::EINVAL)
                    },
                    |()| Response::Ok,
                ))
            }
            Request::Reset(kind) => {
                let actions = self.registry.reset(kind);
                self.carry_out(actions);
                Ok(Some(Response::Ok))
            }
            Request::Log(level) => {
                let v = match level {
                    LogLevel::Brief => 0,
                    LogLevel::Verbose => 1,
                };
                crate::log::set_verbose(v);
                let _ = self.send_vmm(&ParentToVmm::Verbose(v), &[]);
                let _ = self.control.channel.send(&ParentToControl::Verbose(v), &[]);
                Ok(Some(Response::Ok))
            }
        };
        result.unwrap_or_else(|e| {
            tracing::debug!("request from uid {} refused: {e}", peer.uid);
            Some(err(e.code()))
        })
    }

    fn start_request(
        &mut self,
        client: u64,
        creds: &Creds,
        conf: vmconf::VmConf,
    ) -> Result<Option<Response>, Error> {
        let id = self.registry.start_request(conf, creds)?;
        match self.start_vm(id, Some(client)) {
            Ok(()) => Ok(None),
            Err(code) => Ok(Some(err(code))),
        }
    }

    /// Starts a registered VM (vmd's `config_setvm`): the registry checks
    /// and marks it, then its files and console are opened and vmm asked
    /// to run it. On failure the VM was stopped (config) or removed (ad
    /// hoc) and the result code is returned.
    pub(super) fn start_vm(&mut self, id: VmId, client: Option<u64>) -> Result<(), i32> {
        let plan = match self.registry.begin_start(id, Instant::now()) {
            Ok(plan) => plan,
            Err(StartFailure { error, released }) => {
                tracing::warn!("vm {id}: failed to start: {error}");
                if let Some(r) = released {
                    self.released(r);
                }
                return Err(error.code());
            }
        };
        self.launch(&plan, client)
    }

    /// Opens what a start plan lists and hands it to vmm.
    fn launch(&mut self, plan: &StartPlan, client: Option<u64>) -> Result<(), i32> {
        let id = plan.id;
        match self.try_launch(plan) {
            Ok(()) => {
                if let Some(c) = client {
                    self.starting.insert(id, c);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!("vm {id}: failed to start: {e}");
                if let Some(r) = self.registry.start_failed(id) {
                    self.released(r);
                }
                Err(e.code())
            }
        }
    }

    fn try_launch(&mut self, plan: &StartPlan) -> Result<(), Error> {
        let id = plan.id;
        let t0 = Instant::now();
        let vm = self.registry.by_id(id).ok_or(Error::NotFound)?;
        let mut checks = plan.files.clone();
        if !checks.iter().any(|f| f.role == FileRole::Kernel) {
            checks.insert(
                0,
                FileCheck {
                    role: FileRole::Kernel,
                    path: PathBuf::from(BIOS_PATH),
                    access: Access::Read,
                    check_user: None,
                },
            );
        }
        let files = checks
            .iter()
            .map(FileCheck::open)
            .collect::<Result<Vec<_>, _>>()?;
        let spec = VmSpec {
            id,
            name: vm.conf.name.clone(),
            memory: vm.memory(),
            vcpus: u8::try_from(vm.vcpus()).map_err(|_| Error::InvalidCpus)?,
            cmdline: vm
                .conf
                .cmdline
                .clone()
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            initrd: vm.conf.initrd.is_some(),
            disks: u8::try_from(vm.conf.disks.len()).map_err(|_| Error::TooManyDisks)?,
            cdrom: vm.conf.cdrom.is_some(),
        };
        let owner_gid = vm.owner_gid();
        if !self.ttys.contains_key(&id) || plan.tty.is_none() {
            let pty = Pty::open(plan.uid, owner_gid).map_err(|e| {
                tracing::warn!("vm {id}: {}", crate::error_chain(&e));
                Error::NotFound
            })?;
            self.registry.set_tty(id, pty.path().to_path_buf())?;
            self.ttys.insert(id, pty);
        }
        let pty = &self.ttys[&id];
        let master = pty
            .master()
            .try_clone_to_owned()
            .map_err(|_| Error::NotFound)?;
        let mut fds = vec![master.as_fd()];
        fds.extend(files.iter().map(AsFd::as_fd));
        if !self.send_vmm(&ParentToVmm::Start(spec), &fds) {
            return Err(Error::NotFound);
        }
        tracing::debug!("vm {id}: files and console ready in {:?}", t0.elapsed());
        self.launched.insert(id, Instant::now());
        Ok(())
    }

    fn stop_request(
        &mut self,
        client: u64,
        creds: &Creds,
        target: &VmTarget,
        force: bool,
        wait: bool,
    ) -> Result<Option<Response>, Error> {
        let d = self
            .registry
            .terminate(target, creds, force, wait, client)?;
        let force = d.action == StopAction::Kill;
        if !self.send_vmm(&ParentToVmm::Stop { id: d.id, force }, &[]) {
            return Ok(Some(err(libc::EIO)));
        }
        self.stopping.insert(d.id, (client, d.deferred));
        Ok(None)
    }

    fn stop_all(
        &mut self,
        client: u64,
        creds: &Creds,
        force: bool,
        wait: bool,
    ) -> Result<Option<Response>, Error> {
        let decisions = self.registry.terminate_all(creds, force);
        let mut ids = BTreeSet::new();
        for d in decisions {
            let force = d.action == StopAction::Kill;
            if self.send_vmm(&ParentToVmm::Stop { id: d.id, force }, &[]) {
                ids.insert(d.id);
            }
        }
        if wait && !ids.is_empty() {
            self.waiters.push(Waiter {
                client,
                ids,
                resp: Response::Ok,
            });
            return Ok(None);
        }
        Ok(Some(Response::Ok))
    }

    fn pause_request(
        &mut self,
        client: u64,
        creds: &Creds,
        target: &VmTarget,
        pause: bool,
    ) -> Result<Option<Response>, Error> {
        let id = if pause {
            self.registry.pause(target, creds)?
        } else {
            self.registry.unpause(target, creds)?
        };
        if self.pausing.contains_key(&id) {
            return Ok(Some(err(libc::EBUSY)));
        }
        let msg = if pause {
            ParentToVmm::Pause { id }
        } else {
            ParentToVmm::Unpause { id }
        };
        if !self.send_vmm(&msg, &[]) {
            return Ok(Some(err(libc::EIO)));
        }
        self.pausing.insert(id, client);
        Ok(None)
    }

    /// Handles one report from vmm.
    pub(super) fn dispatch_vmm(&mut self, msg: VmmToParent) {
        match msg {
            VmmToParent::Started { id, pid } => {
                if self.registry.started(id, pid).is_err() {
                    return;
                }
                let Some(vm) = self.registry.by_id(id) else {
                    return;
                };
                let tty = vm
                    .tty
                    .as_ref()
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                tracing::info!("{}: started vm {id} successfully, tty {tty}", vm.name());
                if let Some(t) = self.launched.remove(&id) {
                    tracing::debug!("vm {id}: built and running {:?} after launch", t.elapsed());
                }
                if let Some(client) = self.starting.remove(&id) {
                    self.reply(client, Response::StartOk { id, tty });
                }
            }
            VmmToParent::StartFailed { id, code } => {
                if let Some(vm) = self.registry.by_id(id) {
                    tracing::warn!(
                        "{}: failed to start vm: {}",
                        vm.name(),
                        proto::codes::describe(code)
                    );
                }
                if let Some(client) = self.starting.remove(&id) {
                    self.reply(client, err(code));
                }
                if let Some(r) = self.registry.start_failed(id) {
                    self.released(r);
                }
            }
            VmmToParent::StopResult { id, code } => {
                if code != 0 {
                    self.registry.stop_not_delivered(id);
                }
                if let Some((client, deferred)) = self.stopping.remove(&id) {
                    if code != 0 {
                        self.reply(client, err(code));
                    } else if !deferred {
                        self.reply(client, Response::StopRequested { id });
                    }
                    // A deferred reply goes to the VM's waiter when it ends.
                }
            }
            VmmToParent::PauseResult { id, code } | VmmToParent::UnpauseResult { id, code } => {
                let pause = matches!(msg, VmmToParent::PauseResult { .. });
                if code == 0 && self.registry.set_paused(id, pause).is_ok() {
                    if let Some(vm) = self.registry.by_id(id) {
                        let what = if pause { "paused" } else { "unpaused" };
                        tracing::info!("{}: {what} vm {id} successfully", vm.name());
                    }
                }
                if let Some(client) = self.pausing.remove(&id) {
                    let resp = match (code, pause) {
                        (0, true) => Response::Paused { id },
                        (0, false) => Response::Unpaused { id },
                        (c, _) => err(c),
                    };
                    self.reply(client, resp);
                }
            }
            VmmToParent::Exited { id, status } => {
                tracing::debug!("vm {id} ended: {status:?}");
                match self.registry.on_exit(id, status, Instant::now()) {
                    ExitOutcome::Unknown => {}
                    ExitOutcome::Stopped(r) => {
                        tracing::info!("vm {id} stopped");
                        self.released(r);
                    }
                    ExitOutcome::Restart(plan) => {
                        tracing::info!("vm {id}: the guest rebooted, restarting it");
                        // launch releases the VM itself if it fails.
                        let _ = self.launch(&plan, None);
                    }
                    ExitOutcome::RestartRefused { error, released } => {
                        tracing::warn!("vm {id}: not restarted: {error}");
                        self.released(released);
                    }
                }
            }
        }
    }

    /// A VM no longer runs: close its console and answer whoever waited
    /// for it.
    fn released(&mut self, r: Released) {
        let id = r.id;
        self.ttys.remove(&id);
        self.launched.remove(&id);
        if let Some(client) = self.starting.remove(&id) {
            self.reply(client, err(libc::EIO));
        }
        if let Some(client) = self.pausing.remove(&id) {
            self.reply(client, err(libc::EINVAL));
        }
        if let Some((client, deferred)) = self.stopping.remove(&id) {
            if !deferred {
                self.reply(client, Response::StopRequested { id });
            }
        }
        if let Some(client) = r.waiter {
            self.reply(client, Response::Terminated { id });
        }
        let mut done = Vec::new();
        for w in &mut self.waiters {
            if w.ids.remove(&id) && w.ids.is_empty() {
                done.push((w.client, w.resp.clone()));
            }
        }
        self.waiters.retain(|w| !w.ids.is_empty());
        for (client, resp) in done {
            self.reply(client, resp);
        }
    }

    /// Applies a configuration and starts the first batch of its VMs
    /// (vmd's `vmd_configure`, `vmd_reload`). `None`: re-read the daemon's
    /// own file. Nothing changes if the file does not load.
    pub(super) fn load(&mut self, path: Option<&Path>) -> Result<(), String> {
        let (path, mode) = match path {
            Some(p) => (p.to_path_buf(), LoadMode::Load),
            None => (self.args.conf.clone(), LoadMode::Reload),
        };
        let config: Config = crate::conf::load(&path, &self.args.macros)?;
        self.apply(&config, mode)
    }

    /// Applies a loaded configuration (all or nothing) and starts the
    /// first batch of its enabled VMs.
    pub(super) fn apply(&mut self, config: &Config, mode: LoadMode) -> Result<(), String> {
        let actions = self
            .registry
            .apply_config(config, mode)
            .map_err(|e| crate::error_chain(&e))?;
        self.carry_out(actions);
        self.start_batch();
        Ok(())
    }

    fn carry_out(&mut self, actions: Vec<ConfigAction>) {
        for a in actions {
            match a {
                ConfigAction::Removed(id) => {
                    self.ttys.remove(&id);
                }
                ConfigAction::Killed { id, tty: _, waiter } => {
                    let _ = self.send_vmm(&ParentToVmm::Stop { id, force: true }, &[]);
                    self.released(Released {
                        id,
                        removed: true,
                        tty: None,
                        waiter,
                    });
                }
                ConfigAction::Registered(_) | ConfigAction::Kept(_) => {}
                ConfigAction::CreateSwitch(sw) | ConfigAction::DeleteSwitch(sw) => {
                    tracing::warn!("switch {}: switches are not yet supported", sw.name);
                }
            }
        }
    }

    /// Starts the next batch of waiting config VMs (vmd's
    /// `start_vm_batch`) and arms the timer for the one after.
    pub(super) fn start_batch(&mut self) {
        let batch = self.registry.next_batch(online_cpus());
        for id in batch.start {
            let _ = self.start_vm(id, None);
        }
        self.next_batch = batch
            .more
            .then(|| Instant::now() + self.registry.stagger_delay());
    }
}
