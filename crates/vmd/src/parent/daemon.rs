//! The parent's life cycle (vmd's `main`, `vmd_configure`,
//! `vmd_shutdown`, `vmd_sighdlr`): configuration test, start-up of the
//! children, the event loop, signals and shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use privsep::{ChannelError, Child, Listener, Role};
use proto::internal::{ControlToParent, ParentToControl, ParentToVmm, VmmToParent};
use proto::Response;
use vmconf::Config;

use super::registry::{HostLimits, Registry, VmId};
use super::tty::Pty;
use crate::args::Args;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Signals could not be set up
    #[error("could not set up signal handling")]
    Signals(#[source] Errno),
    /// The control socket could not be created
    #[error("could not create the control socket {0}")]
    Socket(PathBuf, #[source] ChannelError),
    /// The control socket's owner or mode could not be set
    #[error("could not set owner and mode of {0}")]
    SocketOwner(PathBuf, #[source] std::io::Error),
    /// /dev/kvm could not be opened
    #[error("could not open /dev/kvm")]
    Kvm(#[source] std::io::Error),
    /// A child process could not be started
    #[error("could not start the {0} process")]
    Spawn(&'static str, #[source] privsep::ExecError),
    /// Daemonising failed
    #[error("could not daemonize")]
    Daemon(#[source] Errno),
    /// poll failed
    #[error("poll failed")]
    Poll(#[source] Errno),
}

/// Someone waiting for VMs to stop (`vmctl wait`, `stop -w`).
pub(super) struct Waiter {
    pub client: u64,
    pub ids: BTreeSet<VmId>,
    pub resp: Response,
}

/// The parent's state (vmd's `struct vmd`).
pub struct Parent {
    pub(super) args: Args,
    pub(super) registry: Registry,
    pub(super) control: Child,
    pub(super) vmm: Child,
    pub(super) signals: SignalFd,
    /// Consoles of VMs that have one (running, or rebooting).
    pub(super) ttys: BTreeMap<VmId, Pty>,
    /// Clients waiting for a start to complete.
    pub(super) starting: BTreeMap<VmId, u64>,
    /// When each starting VM was handed to vmm (for the debug log).
    pub(super) launched: BTreeMap<VmId, Instant>,
    /// Clients waiting for a stop request to reach the VM.
    pub(super) stopping: BTreeMap<VmId, (u64, bool)>,
    /// Clients waiting for a pause or unpause result.
    pub(super) pausing: BTreeMap<VmId, u64>,
    pub(super) waiters: Vec<Waiter>,
    /// When the next staggered batch starts.
    pub(super) next_batch: Option<Instant>,
    /// Set when the loop should end, with the exit status.
    pub(super) exit: Option<i32>,
}

/// Runs vmd's parent; returns the process's exit status.
pub fn main(mut args: Args) -> i32 {
    crate::log::init("parent", args.debug || args.noaction, args.verbose);
    if args.noaction {
        return crate::conf::configtest(&args.conf, &args.macros);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vmd: need root privileges");
        return 1;
    }
    let config = match crate::conf::load(&args.conf, &args.macros) {
        Ok(c) => c,
        Err(text) => {
            eprint!("{text}");
            return 1;
        }
    };
    // Daemonising changes to /: keep the paths meaning what they meant.
    for p in [&mut args.conf, &mut args.socket] {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    if !args.debug {
        if let Err(e) = nix::unistd::daemon(false, false) {
            eprintln!("vmd: {}", DaemonError::Daemon(e));
            return 1;
        }
    }
    tracing::info!("startup");
    match Parent::start(args, config) {
        Ok(p) => p.run(),
        Err(e) => {
            tracing::error!("{}", crate::error_chain(&e));
            1
        }
    }
}

impl Parent {
    /// Creates the control socket, starts the children and applies the
    /// configuration (vmd's `proc_init`, `proc_connect`, `vmd_configure`).
    fn start(args: Args, config: Config) -> Result<Parent, DaemonError> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
        ] {
            mask.add(s);
        }
        mask.thread_block().map_err(DaemonError::Signals)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(DaemonError::Signals)?;

        // Only the parent opens /dev/kvm (vmd opens /dev/vmm the same way):
        // vmm holds it and hands it to each vm process.
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(DaemonError::Kvm)?;
        let listener = bind_socket(&args.socket, config.global.socket_owner.as_ref())?;
        let flags = args.child_flags();
        let control = privsep::exec::spawn(Role::Control, &flags, &[listener.as_fd()])
            .map_err(|e| DaemonError::Spawn("control", e))?;
        drop(listener);
        let vmm = match privsep::exec::spawn(Role::Vmm, &flags, &[kvm.as_fd()]) {
            Ok(v) => v,
            Err(e) => {
                let _ = kill(control.pid, Signal::SIGTERM);
                let _ = std::fs::remove_file(&args.socket);
                return Err(DaemonError::Spawn("vmm", e));
            }
        };
        drop(kvm);
        if let Err(e) = privsep::sandbox::confine_parent() {
            tracing::warn!("{}", crate::error_chain(&e));
        }
        let mut parent = Parent {
            args,
            registry: Registry::new(HostLimits::detect()),
            control,
            vmm,
            signals,
            ttys: BTreeMap::new(),
            starting: BTreeMap::new(),
            launched: BTreeMap::new(),
            stopping: BTreeMap::new(),
            pausing: BTreeMap::new(),
            waiters: Vec::new(),
            next_batch: None,
            exit: None,
        };
        if let Err(text) = parent.apply(&config, super::registry::LoadMode::Reload) {
            tracing::warn!("configuration not applied: {text}");
        }
        Ok(parent)
    }

    /// The event loop; returns the exit status.
    fn run(mut self) -> i32 {
        while self.exit.is_none() {
            if let Err(e) = self.turn() {
                tracing::error!("{}", crate::error_chain(&e));
                self.exit = Some(1);
            }
        }
        let code = self.exit.unwrap_or(1);
        self.shutdown();
        code
    }

    fn turn(&mut self) -> Result<(), DaemonError> {
        let timeout = self.next_batch.map_or(PollTimeout::NONE, |t| {
            let ms = t.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        });
        let ev: Vec<PollFlags> = {
            let mut fds = [
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.control.channel.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.vmm.channel.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(DaemonError::Poll(e)),
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        if !ev[0].is_empty() {
            self.on_signals();
        }
        if self.exit.is_none() && !ev[1].is_empty() {
            self.on_control();
        }
        if self.exit.is_none() && !ev[2].is_empty() {
            self.on_vmm();
        }
        if self.exit.is_none() && self.next_batch.is_some_and(|t| t <= Instant::now()) {
            self.next_batch = None;
            self.start_batch();
        }
        Ok(())
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(Signal::SIGTERM | Signal::SIGINT) => {
                    tracing::info!("parent terminating");
                    self.exit = Some(0);
                }
                Ok(Signal::SIGHUP) => {
                    tracing::info!("reload requested with SIGHUP");
                    if let Err(text) = self.load(None) {
                        tracing::warn!("reload failed, keeping the configuration: {text}");
                    }
                }
                _ => {}
            }
        }
    }

    /// Reaps ended children; a dead control or vmm ends the daemon.
    fn reap(&mut self) {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            let pid = match status {
                WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => pid,
                WaitStatus::StillAlive => return,
                _ => continue,
            };
            for (child, name) in [(&self.control, "control"), (&self.vmm, "vmm")] {
                if child.pid == pid {
                    tracing::error!("lost child: {name} process ended ({status:?})");
                    self.exit = Some(1);
                }
            }
        }
    }

    fn on_control(&mut self) {
        match self.control.channel.recv_msg::<ControlToParent>() {
            Ok(ControlToParent::Request { client, peer, req }) => {
                if let Some(resp) = self.dispatch_control(client, peer, req) {
                    self.reply(client, resp);
                }
            }
            Ok(ControlToParent::Gone { client }) => self.forget_client(client),
            Err(e) => {
                tracing::error!("control: {e}");
                self.exit = Some(1);
            }
        }
    }

    fn on_vmm(&mut self) {
        match self.vmm.channel.recv_msg::<VmmToParent>() {
            Ok(msg) => self.dispatch_vmm(msg),
            Err(e) => {
                tracing::error!("vmm: {e}");
                self.exit = Some(1);
            }
        }
    }

    /// Sends a reply to a control client.
    pub(super) fn reply(&self, client: u64, resp: Response) {
        if let Err(e) = self
            .control
            .channel
            .send(&ParentToControl::Reply { client, resp }, &[])
        {
            tracing::warn!("could not reply to client {client}: {e}");
        }
    }

    /// Sends a message to vmm; a vmm that cannot be reached ends the
    /// daemon.
    pub(super) fn send_vmm(
        &mut self,
        msg: &ParentToVmm,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> bool {
        match self.vmm.channel.send(msg, fds) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("vmm: {e}");
                self.exit = Some(1);
                false
            }
        }
    }

    fn forget_client(&mut self, client: u64) {
        self.starting.retain(|_, c| *c != client);
        self.stopping.retain(|_, (c, _)| *c != client);
        self.pausing.retain(|_, c| *c != client);
        self.waiters.retain(|w| w.client != client);
        self.registry.client_gone(client);
    }

    /// Stops every VM and the children, removes the socket (vmd's
    /// `vmd_shutdown`).
    fn shutdown(&mut self) {
        let running: Vec<VmId> = self
            .registry
            .vms()
            .filter(|v| v.state.running)
            .map(|v| v.id)
            .collect();
        for id in running {
            let _ = self
                .vmm
                .channel
                .send(&ParentToVmm::Stop { id, force: true }, &[]);
        }
        // Shutting the channels down tells both children to end; vmm
        // kills and reaps its VMs first.
        for chan in [&self.vmm.channel, &self.control.channel] {
            let _ = nix::sys::socket::shutdown(chan.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        for child in [self.vmm.pid, self.control.pid] {
            wait_or_kill(child, Duration::from_secs(5));
        }
        self.ttys.clear();
        let _ = std::fs::remove_file(&self.args.socket);
    }
}

/// Waits for `pid` to end, killing it after `grace`.
fn wait_or_kill(pid: Pid, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            _ => return,
        }
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates the control socket: mode 0660, owned by root or by `socket
/// owner` (vmd's `control_init`).
fn bind_socket(path: &Path, owner: Option<&vmconf::Owner>) -> Result<Listener, DaemonError> {
    let listener = Listener::bind(path).map_err(|e| DaemonError::Socket(path.to_path_buf(), e))?;
    let err = |e| DaemonError::SocketOwner(path.to_path_buf(), e);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    let uid = owner.and_then(|o| o.uid).unwrap_or(0);
    let gid = owner.and_then(|o| o.gid).unwrap_or(0);
    nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| err(e.into()))?;
    Ok(listener)
}
