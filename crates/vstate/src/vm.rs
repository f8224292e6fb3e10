//! The KVM virtual machine: `/dev/kvm`, the VM fd, in-kernel irqchip and
//! PIT, memory slots and interrupt lines (the KVM half of vmd's `vm.c`
//! `create_vm`/`init_emulated_hw`, where vmd drives vmm(4) instead).
//!
//! Measured on `kvm_pvm` (this project's CI machines): KVM_CAP_IRQCHIP,
//! PIT2, IRQFD, IOEVENTFD, SET_TSS_ADDR, SET_IDENTITY_MAP_ADDR, XSAVE, XCRS,
//! IMMEDIATE_EXIT and SPLIT_IRQCHIP are all present; real mode, 32-bit
//! protected mode and 64-bit long mode guests all run; `int3` in kernel
//! mode ends in KVM_EXIT_INTERNAL_ERROR.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::BootEntry;
use crate::memory::GuestRam;
use crate::vcpu::{Vcpu, VcpuError};

/// Where KVM puts the three-page TSS it needs (inside the MMIO hole, below the LAPIC).
pub const TSS_ADDR: u64 = 0xfffb_d000;
/// Where KVM puts its identity-map page (just below the TSS).
pub const IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Errors from creating or configuring the KVM VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("could not open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_VM failed.
    #[error("could not create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("could not get the supported CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    /// Setting the TSS or identity-map address failed.
    #[error("could not set the TSS address")]
    Tss(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("could not create the in-kernel irqchip")]
    Irqchip(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("could not create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("could not register guest memory with KVM")]
    Memory(#[source] kvm_ioctls::Error),
    /// An eventfd or irqfd could not be set up.
    #[error("could not set up interrupt line {gsi}")]
    Irqfd {
        /// The GSI.
        gsi: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating a vCPU failed.
    #[error("could not create vCPU {0}")]
    Vcpu(u8, #[source] VcpuError),
}

/// A KVM VM with the in-kernel PIC, IOAPIC, LAPICs and PIT.
pub struct KvmVm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    supported_cpuid: CpuId,
}

impl KvmVm {
    /// Opens `/dev/kvm` (or uses the given fd to it) and creates the VM with
    /// `ram` as its memory, the in-kernel irqchip and the PIT.
    ///
    /// The memory slots are registered before the irqchip exists: measured
    /// here, `KVM_SET_USER_MEMORY_REGION` then takes 0.3-0.8 ms instead of
    /// 6-7 ms (each later slot update waits for an expedited SRCU grace
    /// period that the irqchip's users make slow), and the PIT 0.1-0.9 ms
    /// instead of 1.4-1.7 ms.
    pub fn new(kvm_fd: Option<OwnedFd>, ram: &GuestRam) -> Result<Self, VmError> {
        let kvm = match kvm_fd {
            // SAFETY: the caller hands us ownership of an fd to /dev/kvm.
            Some(fd) => unsafe { Kvm::from_raw_fd(fd.into_raw_fd()) },
            None => Kvm::new().map_err(VmError::OpenKvm)?,
        };
        // KVM_GET_SUPPORTED_CPUID takes 0.3-0.4 ms here: ask on a second
        // thread while this one builds the VM.
        let (fd, supported_cpuid) = std::thread::scope(|s| {
            let cpuid = s.spawn(|| kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES));
            let fd = Self::create(&kvm, ram);
            let cpuid = cpuid
                .join()
                .unwrap_or_else(|_| Err(kvm_ioctls::Error::new(libc::EINTR)));
            (fd, cpuid)
        });
        let fd = fd?;
        let supported_cpuid = supported_cpuid.map_err(VmError::Cpuid)?;
        Ok(Self {
            kvm,
            fd: Arc::new(fd),
            supported_cpuid,
        })
    }

    fn create(kvm: &Kvm, ram: &GuestRam) -> Result<VmFd, VmError> {
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(TSS_ADDR as usize)
            .map_err(VmError::Tss)?;
        fd.set_identity_map_address(IDENTITY_MAP_ADDR)
            .map_err(VmError::Tss)?;
        map_memory(&fd, ram)?;
        fd.create_irq_chip().map_err(VmError::Irqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::Pit)?;
        Ok(fd)
    }

    /// The most vCPUs KVM allows in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// The VM fd.
    pub fn fd(&self) -> &Arc<VmFd> {
        &self.fd
    }

    /// An interrupt line on `gsi` (ISA IRQ number for the legacy chips),
    /// backed by an irqfd: triggering it pulses the line in the PIC and IOAPIC.
    pub fn irq_line(&self, gsi: u32) -> Result<Arc<IrqLine>, VmError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|source| VmError::Irqfd { gsi, source })?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|e| VmError::Irqfd {
                gsi,
                source: std::io::Error::from_raw_os_error(e.errno()),
            })?;
        Ok(Arc::new(IrqLine { gsi, evt }))
    }

    /// A level-triggered interrupt line on `gsi` driven with `KVM_IRQ_LINE`
    /// (the ACPI SCI): the level is held until the device lowers it.
    pub fn level_irq_line(&self, gsi: u32) -> Arc<LevelIrqLine> {
        Arc::new(LevelIrqLine {
            vm: self.fd.clone(),
            gsi,
        })
    }

    /// Creates and configures vCPU `index` of `nr_vcpus`; the boot vCPU
    /// (index 0) gets `entry`, the others wait for INIT/SIPI.
    pub fn create_vcpu(
        &self,
        index: u8,
        nr_vcpus: u8,
        entry: Option<BootEntry>,
        io: devices::bus::Bus,
        mmio: devices::bus::Bus,
    ) -> Result<Vcpu, VmError> {
        Vcpu::new(
            &self.fd,
            &self.supported_cpuid,
            index,
            nr_vcpus,
            entry,
            io,
            mmio,
        )
        .map_err(|e| VmError::Vcpu(index, e))
    }
}

/// Registers every guest RAM region as a KVM memory slot.
fn map_memory(fd: &VmFd, ram: &GuestRam) -> Result<(), VmError> {
    for (slot, region) in ram.memory().iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `ram`, which the
        // caller keeps alive as long as the VM (the runtime holds both).
        unsafe { fd.set_user_memory_region(r) }.map_err(VmError::Memory)?;
    }
    Ok(())
}

/// An interrupt line backed by an irqfd.
pub struct IrqLine {
    gsi: u32,
    evt: EventFd,
}

impl IrqLine {
    /// The GSI this line drives.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl devices::bus::Interrupt for IrqLine {
    fn trigger(&self) {
        if let Err(e) = self.evt.write(1) {
            tracing::warn!("could not signal irq {}: {e}", self.gsi);
        }
    }
}

/// A level-triggered interrupt line driven with `KVM_IRQ_LINE`.
pub struct LevelIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl LevelIrqLine {
    fn set(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            tracing::warn!("could not set irq {} to {high}: {e}", self.gsi);
        }
    }
}

impl devices::bus::Interrupt for LevelIrqLine {
    fn trigger(&self) {
        self.set(true);
        self.set(false);
    }

    fn set_level(&self, high: bool) {
        self.set(high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_with_irqchip_and_memory_can_be_created() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let vm = KvmVm::new(None, &ram).unwrap();
        assert!(vm.max_vcpus() >= 1);
        let line = vm.irq_line(4).unwrap();
        assert_eq!(line.gsi(), 4);
        devices::bus::Interrupt::trigger(&*line);
        let sci = vm.level_irq_line(9);
        devices::bus::Interrupt::set_level(&*sci, true);
        devices::bus::Interrupt::set_level(&*sci, false);
    }
}
