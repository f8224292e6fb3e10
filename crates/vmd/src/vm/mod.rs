//! The `vm` process: one KVM virtual machine (vmd's `vm.c`, `x86_vm.c`).
//!
//! [`Vm::new`] builds the VM from a [`VmConfig`] whose files the caller
//! already opened (guest memory, KVM irqchip and PIT, the legacy platform
//! devices of the `devices` crate, ACPI tables, the kernel, one configured
//! vCPU per thread-to-be); [`Vm::run`] starts one thread per vCPU plus the
//! console input thread and blocks until the VM ends, returning a
//! [`VmOutcome`]. A [`VmHandle`] pauses, resumes, presses the power button
//! or terminates it from any thread.
//!
//! Control reaches the vCPU threads as typed messages ([`VcpuMsg`]) on one
//! channel per vCPU, followed by a kick signal that makes `KVM_RUN` return
//! (see `vstate::vcpu`). Outcomes travel the other way on one channel the
//! `run` thread waits on: the first outcome wins, then every vCPU is
//! stopped and joined.
//!
//! Outcomes and exit codes: guest power off (ACPI S5, KVM system event
//! shutdown) → [`VmOutcome::PowerOff`], 0; guest reset (i8042 0xfe, 0xcf9,
//! FADT reset register, triple fault, KVM system event reset) →
//! [`VmOutcome::Reboot`], `EAGAIN` (vmd's "restart me"); [`VmHandle::terminate`]
//! → [`VmOutcome::Terminated`], 0; KVM internal error or failed entry (a
//! register dump is logged) → [`VmOutcome::Failed`], 1.

mod console;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use devices::acpi::{self, AcpiLayout};
use devices::bus::{Bus, PowerEvents};
use devices::platform::{Platform, PlatformConfig};
use devices::pm::{Pm, SCI_IRQ};
use devices::rtc::{CmosConfig, RTC_IRQ};
use devices::serial::COM1_IRQ;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vstate::boot::{self, BootSpec};
use vstate::memory::{GuestRam, MMIO_HOLE_START};
use vstate::vcpu::{self, Vcpu, VcpuStop};
use vstate::vm::KvmVm;

/// Everything needed to build one VM. The caller opened every file: the
/// `vm` process opens nothing itself (except `/dev/kvm` for now).
pub struct VmConfig {
    /// The VM's name, for logs.
    pub name: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The kernel image (bzImage, ELF vmlinux, gzip'd ELF).
    pub kernel: std::fs::File,
    /// The initial ramdisk.
    pub initrd: Option<std::fs::File>,
    /// The kernel command line.
    pub cmdline: String,
    /// Disk images (not supported yet: must be empty).
    pub disks: Vec<std::fs::File>,
    /// Where the serial console goes.
    pub console: Console,
}

/// The guest's serial console.
pub enum Console {
    /// This process's stdin and stdout.
    Stdio,
    /// A pty master or socket: guest output is written to it, input read from it.
    Fd(OwnedFd),
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest powered off.
    PowerOff,
    /// The guest reset itself (or triple-faulted): start it again.
    Reboot,
    /// [`VmHandle::terminate`] ended it.
    Terminated,
    /// The VM could not continue; the text says why (with a register dump).
    Failed(String),
}

impl VmOutcome {
    /// The `vm` process's exit status for this outcome: 0 for power off
    /// and terminate, `EAGAIN` for reboot, 1 for failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOutcome::PowerOff | VmOutcome::Terminated => 0,
            VmOutcome::Reboot => libc::EAGAIN,
            VmOutcome::Failed(_) => 1,
        }
    }
}

/// Errors from building or controlling a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Disks were given: no virtio-blk yet.
    #[error("disks are not yet supported")]
    DisksUnsupported,
    /// Zero vCPUs or more than KVM allows.
    #[error("{asked} vCPUs requested, this host allows 1 to {max}")]
    Vcpus {
        /// Requested.
        asked: u8,
        /// Host limit.
        max: usize,
    },
    /// Guest memory could not be created ("could not allocate guest memory").
    #[error(transparent)]
    Memory(#[from] vstate::memory::MemoryError),
    /// KVM refused to create or configure the VM.
    #[error("could not create the VM")]
    Kvm(#[from] vstate::vm::VmError),
    /// The platform devices could not be mapped.
    #[error("could not set up the platform devices")]
    Platform(#[from] devices::platform::PlatformError),
    /// The ACPI tables could not be written.
    #[error("could not write the ACPI tables")]
    Acpi(#[from] devices::acpi::AcpiError),
    /// The kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Boot(#[from] vstate::boot::BootError),
    /// The console fd could not be set up.
    #[error("could not set up the console")]
    Console(#[source] std::io::Error),
    /// A thread or eventfd could not be created.
    #[error("could not start the VM")]
    Start(#[source] std::io::Error),
    /// The kick signal handler could not be installed.
    #[error("could not set up vCPU signals")]
    Signal(#[from] vstate::vcpu::VcpuError),
    /// The VM is not running (not started yet, or already ended).
    #[error("the VM is not running")]
    NotRunning,
}

/// A control message to a vCPU thread.
pub enum VcpuMsg {
    /// Stop running the guest, acknowledge, and wait for `Resume` or `Stop`.
    Pause(SyncSender<()>),
    /// Continue after a pause.
    Resume,
    /// Leave the thread.
    Stop,
}

/// What the VM's threads and handles share.
struct Shared {
    name: String,
    vcpu_tx: Vec<Sender<VcpuMsg>>,
    /// The running vCPU threads, for kicks; an entry is cleared (under the
    /// lock) before its thread ends, so a kick never reaches a dead thread.
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    outcome_tx: Mutex<Sender<VmOutcome>>,
    pm: Arc<Mutex<Pm>>,
    /// Serialises pause/resume and remembers whether the VM is paused.
    paused: Mutex<bool>,
}

impl Shared {
    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for t in threads.iter().flatten() {
            // SAFETY: the thread is alive: its entry is cleared under this
            // lock before it exits.
            unsafe { libc::pthread_kill(*t, vcpu::kick_signal()) };
        }
    }

    fn send_outcome(&self, o: VmOutcome) {
        let _ = self
            .outcome_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(o);
    }

    fn running(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(Option::is_some)
    }
}

/// Power events from the devices end the VM.
struct PowerSink(PowerTarget);

impl PowerEvents for PowerSink {
    fn power_off(&self) {
        if let Some(s) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            tracing::info!("{}: guest powered off", s.name);
            s.send_outcome(VmOutcome::PowerOff);
        }
    }

    fn reset(&self) {
        if let Some(s) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            tracing::info!("{}: guest reset", s.name);
            s.send_outcome(VmOutcome::Reboot);
        }
    }
}

/// Controls a VM from any thread while [`Vm::run`] blocks.
#[derive(Clone)]
pub struct VmHandle {
    shared: Arc<Shared>,
}

impl VmHandle {
    /// Stops every vCPU and waits until all of them have stopped.
    pub fn pause(&self) -> Result<(), Error> {
        let mut paused = self.shared.paused.lock().unwrap_or_else(|e| e.into_inner());
        if *paused {
            return Ok(());
        }
        if !self.shared.running() {
            return Err(Error::NotRunning);
        }
        let (ack_tx, ack_rx) = mpsc::sync_channel(self.shared.vcpu_tx.len());
        for tx in &self.shared.vcpu_tx {
            tx.send(VcpuMsg::Pause(ack_tx.clone()))
                .map_err(|_| Error::NotRunning)?;
        }
        drop(ack_tx);
        self.shared.kick_all();
        for _ in &self.shared.vcpu_tx {
            ack_rx.recv().map_err(|_| Error::NotRunning)?;
        }
        *paused = true;
        tracing::info!("{}: paused", self.shared.name);
        Ok(())
    }

    /// Lets the vCPUs run again after [`VmHandle::pause`].
    pub fn resume(&self) -> Result<(), Error> {
        let mut paused = self.shared.paused.lock().unwrap_or_else(|e| e.into_inner());
        if !*paused {
            return if self.shared.running() {
                Ok(())
            } else {
                Err(Error::NotRunning)
            };
        }
        for tx in &self.shared.vcpu_tx {
            tx.send(VcpuMsg::Resume).map_err(|_| Error::NotRunning)?;
        }
        *paused = false;
        tracing::info!("{}: resumed", self.shared.name);
        Ok(())
    }

    /// Presses the ACPI power button (a graceful shutdown request).
    pub fn power_button(&self) {
        let listening = self
            .shared
            .pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
        tracing::info!(
            "{}: power button pressed{}",
            self.shared.name,
            if listening {
                ""
            } else {
                " (the guest has not enabled it)"
            }
        );
    }

    /// Ends [`Vm::run`] promptly with [`VmOutcome::Terminated`].
    pub fn terminate(&self) {
        self.shared.send_outcome(VmOutcome::Terminated);
    }
}

/// A built VM, ready to run.
pub struct Vm {
    shared: Arc<Shared>,
    vcpus: Vec<(Vcpu, Receiver<VcpuMsg>)>,
    outcome_rx: Receiver<VmOutcome>,
    console_in: Option<(OwnedFd, EventFd)>,
    platform: Platform,
    // Clones of the buses, for the count of unclaimed accesses.
    io_bus: Bus,
    mmio_bus: Bus,
    // Kept alive as long as the vCPUs run: KVM maps this memory.
    _ram: GuestRam,
    _kvm: KvmVm,
    /// Where the devices' power events go; emptied when the VM is dropped,
    /// which breaks the cycle Shared → PM device → PowerSink → Shared.
    power_target: PowerTarget,
}

type PowerTarget = Arc<Mutex<Option<Arc<Shared>>>>;

impl Drop for Vm {
    fn drop(&mut self) {
        *self.power_target.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Splits the console into an output sink, and an input fd (with the
/// eventfd the serial port signals when the guest drains its FIFO).
fn console_fds(console: Console) -> Result<(Box<dyn std::io::Write + Send>, OwnedFd), Error> {
    match console {
        Console::Stdio => {
            let out = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(Error::Console)?;
            let input = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(Error::Console)?;
            Ok((Box::new(console::FdSink::new(out)), input))
        }
        Console::Fd(fd) => {
            console::set_nonblocking(fd.as_fd(), true).map_err(Error::Console)?;
            let out = fd.try_clone().map_err(Error::Console)?;
            Ok((Box::new(console::FdSink::new(out)), fd))
        }
    }
}

impl Vm {
    /// Builds the VM described by `cfg`.
    pub fn new(cfg: VmConfig) -> Result<(Vm, VmHandle), Error> {
        Self::new_with_kvm(cfg, None)
    }

    /// [`Vm::new`] with an already opened `/dev/kvm` (as vmm passes it, so
    /// the `vm` process opens nothing); `None` opens `/dev/kvm`.
    pub fn new_with_kvm(cfg: VmConfig, kvm_fd: Option<OwnedFd>) -> Result<(Vm, VmHandle), Error> {
        let t0 = Instant::now();
        if !cfg.disks.is_empty() {
            return Err(Error::DisksUnsupported);
        }
        vcpu::install_kick_handler()?;
        let mut marks: Vec<(&str, u128)> = Vec::with_capacity(8);
        let mut mark = |what| marks.push((what, t0.elapsed().as_micros()));
        let ram = GuestRam::new(cfg.memory)?;
        mark("memfd");
        let kvm = KvmVm::new(kvm_fd, &ram)?;
        mark("kvm");
        let max = kvm.max_vcpus().min(acpi::MAX_VCPUS as usize).min(255);
        if cfg.vcpus == 0 || usize::from(cfg.vcpus) > max {
            return Err(Error::Vcpus {
                asked: cfg.vcpus,
                max,
            });
        }

        let (console_out, console_in) = console_fds(cfg.console)?;
        let drained = EventFd::new(EFD_NONBLOCK).map_err(Error::Start)?;
        let power_target: PowerTarget = Arc::new(Mutex::new(None));
        let mut io = Bus::new();
        let mmio = Bus::new();
        let platform = Platform::attach(
            &mut io,
            PlatformConfig {
                cmos: CmosConfig {
                    ram_below_4g: cfg.memory.min(MMIO_HOLE_START),
                    ram_above_4g: cfg.memory.saturating_sub(MMIO_HOLE_START),
                    vcpus: u32::from(cfg.vcpus),
                },
                console_out,
                console_drained: Some(drained.try_clone().map_err(Error::Start)?),
                com1_irq: kvm.irq_line(COM1_IRQ)?,
                rtc_irq: kvm.irq_line(RTC_IRQ)?,
                sci: kvm.level_irq_line(SCI_IRQ),
                power: Arc::new(PowerSink(power_target.clone())),
            },
        )?;
        mark("devices");
        let rsdp = acpi::create_tables(ram.memory(), &AcpiLayout::new(u32::from(cfg.vcpus)))?;
        mark("acpi");

        let mut kernel = cfg.kernel;
        let mut initrd = cfg.initrd;
        let entry = boot::load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut kernel,
                initrd: initrd.as_mut(),
                cmdline: &cfg.cmdline,
                rsdp: Some(rsdp.0),
            },
        )?;
        tracing::debug!("{}: kernel loaded, entry {entry:x?}", cfg.name);

        mark("kernel");
        let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
        let mut vcpu_tx = Vec::with_capacity(usize::from(cfg.vcpus));
        for i in 0..cfg.vcpus {
            let v = kvm.create_vcpu(
                i,
                cfg.vcpus,
                (i == 0).then_some(entry),
                io.clone(),
                mmio.clone(),
            )?;
            let (tx, rx) = mpsc::channel();
            vcpus.push((v, rx));
            vcpu_tx.push(tx);
        }
        mark("vcpus");
        let (outcome_tx, outcome_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            name: cfg.name,
            vcpu_tx,
            threads: Mutex::new(vec![None; usize::from(cfg.vcpus)]),
            outcome_tx: Mutex::new(outcome_tx),
            pm: platform.pm.clone(),
            paused: Mutex::new(false),
        });
        *power_target.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
        tracing::debug!(
            "{}: built in {} us ({} MiB, {} vCPUs; stages at us: {marks:?})",
            shared.name,
            t0.elapsed().as_micros(),
            ram.size() >> 20,
            shared.vcpu_tx.len()
        );
        let handle = VmHandle {
            shared: shared.clone(),
        };
        Ok((
            Vm {
                shared,
                vcpus,
                outcome_rx,
                console_in: Some((console_in, drained)),
                platform,
                io_bus: io,
                mmio_bus: mmio,
                _ram: ram,
                _kvm: kvm,
                power_target,
            },
            handle,
        ))
    }

    /// Runs the VM until it ends.
    pub fn run(mut self) -> VmOutcome {
        let t0 = Instant::now();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let stop_input = EventFd::new(EFD_NONBLOCK).ok();
        let mut input_thread = None;
        if let (Some((fd, drained)), Some(stop)) = (self.console_in.take(), &stop_input) {
            if let Ok(stop) = stop.try_clone() {
                let serial = self.platform.serial.clone();
                input_thread = std::thread::Builder::new()
                    .name("console-in".into())
                    .spawn(move || console::input_loop(fd, serial, drained, stop))
                    .ok();
            }
        }
        for (i, (vcpu, rx)) in self.vcpus.drain(..).enumerate() {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || vcpu_thread(i, vcpu, rx, shared));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.shared.send_outcome(VmOutcome::Failed(format!(
                        "could not start vCPU thread {i}: {e}"
                    )));
                    break;
                }
            }
        }
        tracing::debug!(
            "{}: {} vCPU threads started in {} us",
            self.shared.name,
            threads.len(),
            t0.elapsed().as_micros()
        );
        let outcome = self
            .outcome_rx
            .recv()
            .unwrap_or_else(|_| VmOutcome::Failed("all VM threads are gone".into()));
        for tx in &self.shared.vcpu_tx {
            let _ = tx.send(VcpuMsg::Stop);
        }
        self.shared.kick_all();
        for t in threads {
            let _ = t.join();
        }
        if let Some(stop) = &stop_input {
            let _ = stop.write(1);
        }
        if let Some(t) = input_thread {
            let _ = t.join();
        }
        match &outcome {
            VmOutcome::Failed(why) => tracing::error!("{}: {why}", self.shared.name),
            o => tracing::info!("{}: ended: {o:?}", self.shared.name),
        }
        tracing::debug!(
            "{}: {} port and {} MMIO accesses hit no device",
            self.shared.name,
            self.io_bus.unhandled(),
            self.mmio_bus.unhandled()
        );
        outcome
    }
}

/// Clears the thread's kick entry when the thread ends, however it ends,
/// and reports a panicking vCPU thread as a failure.
struct KickEntry<'a> {
    shared: &'a Shared,
    index: usize,
}

impl Drop for KickEntry<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Nobody else would tell `run`, which would wait forever.
            self.shared.send_outcome(VmOutcome::Failed(format!(
                "vCPU {} thread panicked",
                self.index
            )));
        }
        let mut t = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = t.get_mut(self.index) {
            *slot = None;
        }
    }
}

fn unblock_kick_signal() {
    // SAFETY: sigset operations on a local, initialised set; pthread_sigmask
    // only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, vcpu::kick_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Handles pending control messages; returns false when the thread must end.
fn handle_messages(vcpu: &Vcpu, rx: &Receiver<VcpuMsg>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(VcpuMsg::Pause(ack)) => {
                vcpu.note_paused();
                let _ = ack.send(());
                loop {
                    match rx.recv() {
                        Ok(VcpuMsg::Resume) => break,
                        Ok(VcpuMsg::Pause(ack)) => {
                            let _ = ack.send(());
                        }
                        Ok(VcpuMsg::Stop) | Err(_) => return false,
                    }
                }
            }
            Ok(VcpuMsg::Resume) => {}
            Ok(VcpuMsg::Stop) | Err(TryRecvError::Disconnected) => return false,
            Err(TryRecvError::Empty) => return true,
        }
    }
}

fn vcpu_thread(index: usize, mut vcpu: Vcpu, rx: Receiver<VcpuMsg>, shared: Arc<Shared>) {
    unblock_kick_signal();
    vcpu.bind_to_thread();
    {
        let mut t = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = t.get_mut(index) {
            // SAFETY: pthread_self has no preconditions.
            *slot = Some(unsafe { libc::pthread_self() });
        }
    }
    let _entry = KickEntry {
        shared: &shared,
        index,
    };
    while handle_messages(&vcpu, &rx) {
        let outcome = match vcpu.run() {
            VcpuStop::Interrupted => continue,
            VcpuStop::TripleFault => {
                tracing::info!("{}: vCPU {index} triple fault, resetting", shared.name);
                VmOutcome::Reboot
            }
            VcpuStop::Reset => VmOutcome::Reboot,
            VcpuStop::PowerOff => VmOutcome::PowerOff,
            VcpuStop::Failed(why) => VmOutcome::Failed(why),
        };
        shared.send_outcome(outcome);
        break;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_vmd_exit_codes() {
        assert_eq!(VmOutcome::PowerOff.exit_code(), 0);
        assert_eq!(VmOutcome::Terminated.exit_code(), 0);
        assert_eq!(VmOutcome::Reboot.exit_code(), 11);
        assert_eq!(VmOutcome::Failed("x".into()).exit_code(), 1);
    }

    #[test]
    fn disks_are_refused() {
        let cfg = VmConfig {
            name: "t".into(),
            memory: 64 << 20,
            vcpus: 1,
            kernel: tempfile::tempfile().unwrap(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![tempfile::tempfile().unwrap()],
            console: Console::Stdio,
        };
        assert_eq!(
            Vm::new(cfg).err().unwrap().to_string(),
            "disks are not yet supported"
        );
    }

    #[test]
    fn impossible_memory_says_could_not_allocate() {
        let cfg = VmConfig {
            name: "t".into(),
            memory: 1 << 40,
            vcpus: 1,
            kernel: tempfile::tempfile().unwrap(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            console: Console::Stdio,
        };
        assert_eq!(
            Vm::new(cfg).err().unwrap().to_string(),
            "could not allocate guest memory"
        );
    }

    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<VmHandle>();
    }
}
