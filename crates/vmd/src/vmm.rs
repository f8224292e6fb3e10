//! The vmm process (vmd's `vmm.c`): runs as the unprivileged user, starts
//! one `vm` process per VM (fork + exec of the daemon's binary), relays
//! the parent's stop/pause/unpause requests to it, reaps it and reports
//! how it ended (exit 0: powered off, `EAGAIN`: the guest rebooted).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use privsep::{Channel, ChannelError, Role};
use proto::internal::{ExitStatus, ParentToVmm, VmSpec, VmToVmm, VmmToParent, VmmToVm};

/// How long a forced stop waits for the VM to end by itself before its
/// process is killed.
const FORCE_GRACE: Duration = Duration::from_secs(3);

/// Why the vmm process stopped.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The parent sent something it must not
    #[error("bad message from the parent")]
    Parent(#[source] ChannelError),
    /// The signal descriptor could not be set up or read
    #[error("signal handling failed")]
    Signals(#[source] Errno),
    /// poll failed
    #[error("poll failed")]
    Poll(#[source] Errno),
}

struct VmProc {
    id: u32,
    pid: Pid,
    chan: Option<Channel>,
    /// The VM reported it runs; its end is an `Exited`, not a failed start.
    running: bool,
    /// The failure already reported for a VM that never ran.
    failed: bool,
    /// When a forced stop gives up waiting and kills the process.
    kill_at: Option<Instant>,
}

/// The vmm process's state.
pub struct Vmm {
    parent: Channel,
    /// `/dev/kvm`, opened by the parent, handed to every vm process.
    kvm: OwnedFd,
    sigchld: SignalFd,
    vms: BTreeMap<i32, VmProc>,
    child_flags: Vec<OsString>,
}

impl Vmm {
    /// A vmm process with its channel to the parent and `/dev/kvm`;
    /// `child_flags` are passed on to every `vm` process (`-d`, `-v`).
    pub fn new(
        parent: Channel,
        kvm: OwnedFd,
        child_flags: Vec<OsString>,
    ) -> Result<Self, VmmError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(VmmError::Signals)?;
        let sigchld = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(VmmError::Signals)?;
        Ok(Vmm {
            parent,
            kvm,
            sigchld,
            vms: BTreeMap::new(),
            child_flags,
        })
    }

    /// Runs until the parent goes away (then every VM is ended) or
    /// misbehaves.
    pub fn run(mut self) -> Result<(), VmmError> {
        let result = self.event_loop();
        self.kill_all();
        result
    }

    fn event_loop(&mut self) -> Result<(), VmmError> {
        loop {
            let pids: Vec<i32> = self
                .vms
                .iter()
                .filter(|(_, v)| v.chan.is_some())
                .map(|(&pid, _)| pid)
                .collect();
            let timeout = self.next_deadline().map_or(PollTimeout::NONE, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX)
            });
            let events: Vec<PollFlags> = {
                let mut fds = vec![
                    PollFd::new(self.parent.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
                ];
                for pid in &pids {
                    if let Some(chan) = &self.vms[pid].chan {
                        fds.push(PollFd::new(chan.as_fd(), PollFlags::POLLIN));
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(VmmError::Poll(e)),
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect()
            };
            if !events[0].is_empty() && !self.on_parent()? {
                return Ok(());
            }
            if !events[1].is_empty() {
                while let Ok(Some(_)) = self.sigchld.read_signal() {}
                self.reap();
            }
            for (pid, ev) in pids.into_iter().zip(&events[2..]) {
                if !ev.is_empty() {
                    self.on_vm(pid);
                }
            }
            self.kill_overdue();
        }
    }

    fn on_parent(&mut self) -> Result<bool, VmmError> {
        let (msg, fds) = match self.parent.recv::<ParentToVmm>() {
            Ok(m) => m,
            Err(ChannelError::Closed) => return Ok(false),
            Err(e) => return Err(VmmError::Parent(e)),
        };
        match msg {
            ParentToVmm::Start(spec) => self.start(spec, fds),
            ParentToVmm::Stop { id, force } => {
                let code = match self.by_id(id) {
                    Some(pid) => {
                        let cmd = if force {
                            VmmToVm::Terminate
                        } else {
                            VmmToVm::PowerButton
                        };
                        let sent = self.send_vm(pid, &cmd);
                        if force {
                            if let Some(vm) = self.vms.get_mut(&pid) {
                                vm.kill_at = Some(Instant::now() + FORCE_GRACE);
                            }
                            0
                        } else if sent {
                            0
                        } else {
                            libc::EIO
                        }
                    }
                    None => libc::ENOENT,
                };
                self.send_parent(&VmmToParent::StopResult { id, code });
            }
            ParentToVmm::Pause { id } => {
                if !self.forward(id, &VmmToVm::Pause) {
                    self.send_parent(&VmmToParent::PauseResult {
                        id,
                        code: libc::ENOENT,
                    });
                }
            }
            ParentToVmm::Unpause { id } => {
                if !self.forward(id, &VmmToVm::Unpause) {
                    self.send_parent(&VmmToParent::UnpauseResult {
                        id,
                        code: libc::ENOENT,
                    });
                }
            }
            ParentToVmm::Verbose(v) => crate::log::set_verbose(v),
        }
        Ok(true)
    }

    fn start(&mut self, spec: VmSpec, fds: Vec<OwnedFd>) {
        let id = spec.id;
        if self.by_id(id).is_some() {
            self.send_parent(&VmmToParent::StartFailed {
                id,
                code: libc::EALREADY,
            });
            return;
        }
        let child = match privsep::exec::spawn(Role::Vm, &self.child_flags, &[self.kvm.as_fd()]) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{}: could not start the vm process: {e}", spec.name);
                self.send_parent(&VmmToParent::StartFailed {
                    id,
                    code: libc::EIO,
                });
                return;
            }
        };
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let name = spec.name.clone();
        let sent = child.channel.send(&VmmToVm::Start(spec), &borrowed);
        drop(fds);
        tracing::debug!("{name}: vm {id} in process {}", child.pid);
        self.vms.insert(
            child.pid.as_raw(),
            VmProc {
                id,
                pid: child.pid,
                chan: Some(child.channel),
                running: false,
                failed: false,
                kill_at: None,
            },
        );
        if let Err(e) = sent.and_then(|()| child_nonblocking(&self.vms, child.pid.as_raw())) {
            tracing::warn!("{name}: could not hand the vm its configuration: {e}");
            let _ = kill(child.pid, Signal::SIGKILL);
        }
    }

    /// Handles one message from a vm process; false when there was none
    /// (nothing waiting, or the channel is gone).
    fn on_vm(&mut self, pid: i32) -> bool {
        let Some(vm) = self.vms.get_mut(&pid) else {
            return false;
        };
        let Some(chan) = vm.chan.as_mut() else {
            return false;
        };
        let id = vm.id;
        let msg = match chan.recv_msg::<VmToVmm>() {
            Ok(m) => m,
            Err(e) if e.would_block() => return false,
            Err(ChannelError::Closed) => {
                // The process is ending; SIGCHLD brings its status.
                vm.chan = None;
                return false;
            }
            Err(e) => {
                tracing::warn!("vm {id}: {e}; killing its process");
                vm.chan = None;
                let _ = kill(vm.pid, Signal::SIGKILL);
                return false;
            }
        };
        let reply = match msg {
            VmToVmm::Running => {
                vm.running = true;
                VmmToParent::Started { id, pid }
            }
            VmToVmm::Failed { code } => {
                vm.failed = true;
                VmmToParent::StartFailed { id, code }
            }
            VmToVmm::PauseResult { code } => VmmToParent::PauseResult { id, code },
            VmToVmm::UnpauseResult { code } => VmmToParent::UnpauseResult { id, code },
        };
        self.send_parent(&reply);
        true
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitStatus::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid, ExitStatus::Signal(sig as i32)),
                _ => continue,
            };
            // What the process said before it ended comes first (a
            // failed start says why).
            while self.on_vm(pid.as_raw()) {}
            let Some(vm) = self.vms.remove(&pid.as_raw()) else {
                continue;
            };
            tracing::debug!("vm {} (process {pid}) ended: {exit:?}", vm.id);
            if matches!(exit, ExitStatus::Code(c) if c == 128 + libc::SIGSYS) {
                // The SIGSYS handler of privsep::sandbox wrote which call.
                tracing::warn!(
                    "vm {}: its seccomp filter refused a system call, see its standard error",
                    vm.id
                );
            }
            let msg = if vm.running {
                VmmToParent::Exited {
                    id: vm.id,
                    status: exit,
                }
            } else if vm.failed {
                continue;
            } else {
                VmmToParent::StartFailed {
                    id: vm.id,
                    code: libc::EIO,
                }
            };
            self.send_parent(&msg);
        }
    }

    fn forward(&mut self, id: u32, msg: &VmmToVm) -> bool {
        match self.by_id(id) {
            Some(pid) => self.send_vm(pid, msg),
            None => false,
        }
    }

    fn send_vm(&mut self, pid: i32, msg: &VmmToVm) -> bool {
        let Some(chan) = self.vms.get(&pid).and_then(|v| v.chan.as_ref()) else {
            return false;
        };
        chan.send(msg, &[]).is_ok()
    }

    fn by_id(&self, id: u32) -> Option<i32> {
        self.vms
            .iter()
            .find(|(_, v)| v.id == id)
            .map(|(&pid, _)| pid)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.vms.values().filter_map(|v| v.kill_at).min()
    }

    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for vm in self.vms.values_mut() {
            if vm.kill_at.is_some_and(|t| t <= now) {
                tracing::info!("vm {}: did not end in time, killing it", vm.id);
                let _ = kill(vm.pid, Signal::SIGKILL);
                vm.kill_at = None;
            }
        }
    }

    fn kill_all(&mut self) {
        for vm in self.vms.values() {
            let _ = kill(vm.pid, Signal::SIGKILL);
        }
        for (&pid, _) in std::mem::take(&mut self.vms).iter() {
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }

    fn send_parent(&self, msg: &VmmToParent) {
        match self.parent.send(msg, &[]) {
            Ok(()) => {}
            // The parent is shutting down: nobody to tell.
            Err(ChannelError::Closed) => tracing::debug!("vmm: parent gone, {msg:?} not sent"),
            Err(e) => tracing::warn!("vmm: could not reach the parent: {e}"),
        }
    }
}

/// Makes a vm process's channel non-blocking once its start message is
/// sent: vmm reads it from its loop and drains it when the process ends.
fn child_nonblocking(vms: &BTreeMap<i32, VmProc>, pid: i32) -> Result<(), ChannelError> {
    match vms.get(&pid).and_then(|v| v.chan.as_ref()) {
        Some(chan) => chan.set_nonblocking(true),
        None => Ok(()),
    }
}
