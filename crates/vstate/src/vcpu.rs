//! A virtual CPU: its boot state (registers, CPUID, MSRs, FPU, LAPIC) and
//! the exit loop that dispatches port I/O and MMIO to the device buses
//! (vmd's `vcpu_run_loop` and `vcpu_exit` in `vm.c`/`x86_vm.c`).
//!
//! A vCPU thread is interrupted ("kicked") by a real-time signal whose
//! handler sets `immediate_exit` in the thread's `kvm_run`: a kick that
//! lands before `KVM_RUN` makes the next `KVM_RUN` return at once, so no
//! request is lost between checking the message channel and entering the
//! guest.

use std::cell::Cell;
use std::sync::Once;

use devices::bus::Bus;
use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_run, CpuId, Msrs, KVM_EXIT_IO, KVM_EXIT_IO_OUT,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::{self, BootEntry};
use crate::cpuid;

/// Errors from creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("KVM_CREATE_VCPU failed")]
    Create(#[source] kvm_ioctls::Error),
    /// Building or setting CPUID failed.
    #[error("could not set CPUID")]
    Cpuid(#[source] std::io::Error),
    /// Setting MSRs failed.
    #[error("could not set MSRs")]
    Msrs(#[source] kvm_ioctls::Error),
    /// Setting registers (general, special, FPU, LAPIC) failed.
    #[error("could not set {what}")]
    Registers {
        /// Which register set.
        what: &'static str,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Installing the kick signal handler failed.
    #[error("could not install the vCPU kick signal handler")]
    Signal(#[source] std::io::Error),
}

/// Why [`Vcpu::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// Kicked by the kick signal: check the control channel.
    Interrupted,
    /// KVM_EXIT_SHUTDOWN: a triple fault (vmd resets the VM).
    TripleFault,
    /// KVM_SYSTEM_EVENT_RESET.
    Reset,
    /// KVM_SYSTEM_EVENT_SHUTDOWN.
    PowerOff,
    /// The vCPU cannot continue (internal error, failed entry, bad exit);
    /// the message carries a register dump.
    Failed(String),
}

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WB: u64 = 6;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

thread_local! {
    // The kvm_run of the vCPU running on this thread, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = KVM_RUN.with(Cell::get);
    if !p.is_null() {
        // SAFETY: the pointer is this thread's live kvm_run mapping: it is
        // set by `Vcpu::bind_to_thread` and cleared before the mapping goes
        // away (`Vcpu`'s Drop), on this same thread.
        unsafe { std::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
    }
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

/// Installs the (process-wide) kick handler; idempotent.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| VcpuError::Signal(std::io::Error::from_raw_os_error(e.errno())));
    });
    result
}

/// A configured vCPU and the buses its exits go to.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    run_size: usize,
    io: Bus,
    mmio: Bus,
    bound: bool,
    stats: ExitStats,
}

/// Counts of the exits that reached userspace, for profiling (logged at
/// debug level when the vCPU is dropped).
#[derive(Default)]
struct ExitStats {
    /// Port I/O exits per port.
    pio: std::collections::HashMap<u16, u64>,
    /// MMIO exits per 4 KiB page.
    mmio: std::collections::HashMap<u64, u64>,
}

impl ExitStats {
    fn summary(&self) -> String {
        let mut pio: Vec<(u16, u64)> = self.pio.iter().map(|(&p, &n)| (p, n)).collect();
        pio.sort_by_key(|e| std::cmp::Reverse(e.1));
        let mut mmio: Vec<(u64, u64)> = self.mmio.iter().map(|(&p, &n)| (p, n)).collect();
        mmio.sort_by_key(|e| std::cmp::Reverse(e.1));
        let total: u64 =
            pio.iter().map(|e| e.1).sum::<u64>() + mmio.iter().map(|e| e.1).sum::<u64>();
        let top_pio: Vec<String> = pio
            .iter()
            .take(12)
            .map(|(p, n)| format!("{p:#x}:{n}"))
            .collect();
        let top_mmio: Vec<String> = mmio
            .iter()
            .take(6)
            .map(|(p, n)| format!("{p:#x}:{n}"))
            .collect();
        format!(
            "{total} exits; ports {}; mmio pages {}",
            top_pio.join(" "),
            top_mmio.join(" ")
        )
    }
}

fn set_u32(regs: &mut [libc::c_char], off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = *b as libc::c_char;
    }
}

fn get_u32(regs: &[libc::c_char], off: usize) -> u32 {
    u32::from_le_bytes([
        regs[off] as u8,
        regs[off + 1] as u8,
        regs[off + 2] as u8,
        regs[off + 3] as u8,
    ])
}

impl Vcpu {
    pub(crate) fn new(
        vm: &VmFd,
        supported: &CpuId,
        index: u8,
        nr_vcpus: u8,
        entry: Option<BootEntry>,
        io: Bus,
        mmio: Bus,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(VcpuError::Create)?;
        let vcpu = Self {
            fd,
            index,
            run_size: vm.run_size(),
            io,
            mmio,
            bound: false,
            stats: ExitStats::default(),
        };
        let table = cpuid::for_vcpu(supported, index, nr_vcpus)
            .map_err(|e| VcpuError::Cpuid(std::io::Error::other(e.to_string())))?;
        vcpu.fd
            .set_cpuid2(&table)
            .map_err(|e| VcpuError::Cpuid(std::io::Error::from_raw_os_error(e.errno())))?;
        vcpu.set_msrs()?;
        vcpu.set_fpu()?;
        vcpu.set_lapic()?;
        if let Some(entry) = entry {
            vcpu.set_boot_registers(entry)?;
        }
        Ok(vcpu)
    }

    /// This vCPU's index (and APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }

    fn set_msrs(&self) -> Result<(), VcpuError> {
        let list = [
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_TSC, 0),
            (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
            (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WB),
        ];
        let entries: Vec<kvm_msr_entry> = list
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| VcpuError::Msrs(kvm_ioctls::Error::new(libc::EINVAL)))?;
        let n = self.fd.set_msrs(&msrs).map_err(VcpuError::Msrs)?;
        if n != entries.len() {
            tracing::warn!(
                "vCPU {}: KVM accepted {n} of {} boot MSRs (first refused: {:#x})",
                self.index,
                entries.len(),
                entries[n].index
            );
        }
        Ok(())
    }

    fn set_fpu(&self) -> Result<(), VcpuError> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd
            .set_fpu(&fpu)
            .map_err(|source| VcpuError::Registers {
                what: "FPU",
                source,
            })
    }

    /// LINT0 delivers the PIC's ExtINT, LINT1 NMIs (what firmware sets up).
    fn set_lapic(&self) -> Result<(), VcpuError> {
        let mut lapic = self.fd.get_lapic().map_err(|source| VcpuError::Registers {
            what: "LAPIC",
            source,
        })?;
        let lvt0 = get_u32(&lapic.regs, APIC_LVT0);
        set_u32(
            &mut lapic.regs,
            APIC_LVT0,
            (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8),
        );
        let lvt1 = get_u32(&lapic.regs, APIC_LVT1);
        set_u32(
            &mut lapic.regs,
            APIC_LVT1,
            (lvt1 & !0x700) | (APIC_MODE_NMI << 8),
        );
        self.fd
            .set_lapic(&lapic)
            .map_err(|source| VcpuError::Registers {
                what: "LAPIC",
                source,
            })
    }

    fn set_boot_registers(&self, entry: BootEntry) -> Result<(), VcpuError> {
        let mut sregs = self.fd.get_sregs().map_err(|source| VcpuError::Registers {
            what: "special registers",
            source,
        })?;
        let mut regs = kvm_bindings::kvm_regs {
            rflags: 2,
            ..Default::default()
        };
        let data = boot::segment(boot::SEL_DATA);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = boot::segment(boot::SEL_TSS);
        sregs.gdt.base = boot::GDT_START;
        sregs.gdt.limit = boot::gdt_limit();
        sregs.idt.base = boot::IDT_START;
        sregs.idt.limit = 7;
        match entry {
            BootEntry::Pvh { entry, start_info } => {
                sregs.cs = boot::segment(boot::SEL_CODE32);
                sregs.cr0 = CR0_PE | CR0_ET;
                sregs.cr3 = 0;
                sregs.cr4 = 0;
                sregs.efer = 0;
                regs.rip = entry;
                regs.rbx = start_info;
            }
            BootEntry::Linux64 { entry, zero_page } => {
                sregs.cs = boot::segment(boot::SEL_CODE64);
                sregs.cr3 = boot::PML4_START;
                sregs.cr4 |= CR4_PAE;
                sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
                sregs.efer |= EFER_LME | EFER_LMA;
                regs.rip = entry;
                regs.rsi = zero_page;
                regs.rsp = boot::BOOT_STACK;
                regs.rbp = boot::BOOT_STACK;
            }
        }
        self.fd
            .set_sregs(&sregs)
            .map_err(|source| VcpuError::Registers {
                what: "special registers",
                source,
            })?;
        self.fd
            .set_regs(&regs)
            .map_err(|source| VcpuError::Registers {
                what: "registers",
                source,
            })
    }

    /// Makes the kick signal reach this vCPU: must be called on the thread
    /// that runs it, before [`Vcpu::run`].
    pub fn bind_to_thread(&mut self) {
        let p: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|c| c.set(p));
        self.bound = true;
    }

    /// Runs the guest until an exit the runtime must handle; port I/O and
    /// MMIO are dispatched to the buses here and never stop the loop.
    pub fn run(&mut self) -> VcpuStop {
        loop {
            let mut pio = false;
            match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoIn(..) | VcpuExit::IoOut(..) => pio = true,
                    VcpuExit::MmioRead(addr, data) => {
                        self.mmio.read(addr, data);
                        *self.stats.mmio.entry(addr & !0xfff).or_default() += 1;
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        self.mmio.write(addr, data);
                        *self.stats.mmio.entry(addr & !0xfff).or_default() += 1;
                    }
                    VcpuExit::Shutdown => return VcpuStop::TripleFault,
                    VcpuExit::SystemEvent(kind, _) => match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN => return VcpuStop::PowerOff,
                        KVM_SYSTEM_EVENT_RESET => return VcpuStop::Reset,
                        KVM_SYSTEM_EVENT_CRASH => {
                            return VcpuStop::Failed(format!(
                                "guest reported a crash\n{}",
                                self.dump()
                            ))
                        }
                        other => {
                            tracing::debug!("vCPU {}: ignoring system event {other}", self.index)
                        }
                    },
                    VcpuExit::Hlt | VcpuExit::IrqWindowOpen => {}
                    VcpuExit::Intr => return VcpuStop::Interrupted,
                    VcpuExit::InternalError => {
                        let sub = self.internal_suberror();
                        return VcpuStop::Failed(format!(
                            "KVM internal error (suberror {sub})\n{}",
                            self.dump()
                        ));
                    }
                    VcpuExit::FailEntry(reason, cpu) => {
                        return VcpuStop::Failed(format!(
                            "VM entry failed (reason {reason:#x}, host cpu {cpu})\n{}",
                            self.dump()
                        ))
                    }
                    other => {
                        let what = format!("{other:?}");
                        return VcpuStop::Failed(format!(
                            "unexpected exit {what}\n{}",
                            self.dump()
                        ));
                    }
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    return VcpuStop::Interrupted;
                }
                Err(e) => return VcpuStop::Failed(format!("KVM_RUN failed: {e}\n{}", self.dump())),
            }
            if pio {
                if let Err(msg) = self.handle_pio() {
                    return VcpuStop::Failed(msg);
                }
            }
        }
    }

    /// Dispatches a port I/O exit, one bus access per element of a `rep ins/outs`.
    fn handle_pio(&mut self) -> Result<(), String> {
        let run_size = self.run_size;
        let run: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: `run` is this vCPU's kvm_run mapping; we only read fields.
        let reason = unsafe { (*run).exit_reason };
        if reason != KVM_EXIT_IO {
            return Err(format!("port I/O exit with exit reason {reason}"));
        }
        // SAFETY: exit_reason is KVM_EXIT_IO, so `io` is the active union member.
        let io = unsafe { (*run).__bindgen_anon_1.io };
        let size = usize::from(io.size);
        let total = size.checked_mul(io.count as usize);
        let off = usize::try_from(io.data_offset).ok();
        let (Some(total), Some(off)) = (total, off) else {
            return Err("port I/O exit with an impossible size".into());
        };
        if !matches!(size, 1 | 2 | 4) || off.checked_add(total).is_none_or(|end| end > run_size) {
            return Err(format!(
                "port I/O exit out of bounds (size {size}, count {}, offset {off})",
                io.count
            ));
        }
        // SAFETY: [off, off + total) lies inside the kvm_run mapping of
        // `run_size` bytes (checked above); nothing else aliases it while the
        // vCPU is stopped in userspace on this thread.
        let data = unsafe { std::slice::from_raw_parts_mut(run.cast::<u8>().add(off), total) };
        *self.stats.pio.entry(io.port).or_default() += 1;
        for chunk in data.chunks_mut(size) {
            if u32::from(io.direction) == KVM_EXIT_IO_OUT {
                self.io.write(u64::from(io.port), chunk);
            } else {
                self.io.read(u64::from(io.port), chunk);
            }
        }
        Ok(())
    }

    fn internal_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        // SAFETY: only called after a KVM_EXIT_INTERNAL_ERROR, whose union member is `internal`.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    /// Tells a guest using kvmclock that the vCPU was stopped (`KVM_KVMCLOCK_CTRL`),
    /// so that its watchdogs do not take a pause for a lock-up. Call it
    /// while paused; a guest without kvmclock makes it a no-op.
    pub fn note_paused(&self) {
        if let Err(e) = self.fd.kvmclock_ctrl() {
            if e.errno() != libc::EINVAL {
                tracing::debug!("vCPU {}: KVM_KVMCLOCK_CTRL: {e}", self.index);
            }
        }
    }

    /// A register dump for failure reports.
    pub fn dump(&self) -> String {
        let mut s = format!("vCPU {} registers:", self.index);
        if let Ok(r) = self.fd.get_regs() {
            s += &format!(
                "\n rip {:#018x} rsp {:#018x} rflags {:#010x}\n rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n rsi {:#018x} rdi {:#018x} rbp {:#018x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            );
        }
        if let Ok(sr) = self.fd.get_sregs() {
            s += &format!(
                "\n cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}\n cs {:#x} (base {:#x}, l {}, db {}) ss {:#x} gdt {:#x}/{:#x} idt {:#x}/{:#x}",
                sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer, sr.cs.selector, sr.cs.base, sr.cs.l, sr.cs.db, sr.ss.selector,
                sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit
            );
        }
        s
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        tracing::debug!("vCPU {}: {}", self.index, self.stats.summary());
        if self.bound {
            // The mapping goes away with `fd`: the kick handler must not touch it.
            KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        }
    }
}
