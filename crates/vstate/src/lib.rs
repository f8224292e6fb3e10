//! vstate: thin wrappers over KVM for the `vm` process — guest memory,
//! CPUID, the VM and its vCPUs, kernel loading, and the exit loop that
//! feeds the device buses (the KVM side of vmd's `vm.c`, `x86_vm.c` and
//! `loadfile_elf.c`).
//!
//! Building a VM: [`memory::GuestRam::new`], then [`vm::KvmVm::new`] (VM,
//! memory slots, irqchip, PIT, in that order), [`boot::load`] for the
//! kernel, initrd and command line, then [`vm::KvmVm::create_vcpu`] per
//! vCPU; each vCPU thread calls [`vcpu::Vcpu::bind_to_thread`] and loops
//! on [`vcpu::Vcpu::run`].
//!
//! Measured on this project's CI machines, where `/dev/kvm` is `kvm_pvm`
//! (no VT-x/AMD-V; guest kernel mode is emulated):
//! - capabilities: IRQCHIP, PIT2, IRQFD, IOEVENTFD, SET_TSS_ADDR,
//!   SET_IDENTITY_MAP_ADDR, XSAVE, XCRS, IMMEDIATE_EXIT, SPLIT_IRQCHIP are
//!   there; 1024 vCPUs per VM; real mode, 32-bit protected mode (the PVH
//!   entry) and 64-bit long mode all run; INIT/SIPI starts APs (tested up
//!   to 255 vCPUs); interrupts reach the guest through the PIC and through
//!   the IOAPIC; `int3` in guest kernel mode ends in
//!   `KVM_EXIT_INTERNAL_ERROR`, so a stock Linux kernel stops at its
//!   `int3` self-test (it loads and runs its early boot until then);
//! - start-up (release build, 256 MiB, tiny guest): the VM is built
//!   1.4-2.5 ms after `main`; process spawn to the guest's first console
//!   byte median 3.7 ms (min 2.5 ms) on two loaded cores. Registering
//!   memory before the irqchip matters: 0.3 ms instead of 6-7 ms.
//! - the VMM's own peak resident memory with a tiny guest: 2.8 MiB
//!   (0.3 MiB anonymous, the rest the binary's code).

pub mod boot;
pub mod cpuid;
pub mod memory;
pub mod vcpu;
pub mod vm;
