//! vstate: thin wrappers over KVM for the `vm` process — guest memory,
//! CPUID, the VM and its vCPUs, kernel loading, and the exit loop that
//! feeds the device buses (the KVM side of vmd's `vm.c`, `x86_vm.c` and
//! `loadfile_elf.c`).

pub mod boot;
pub mod cpuid;
pub mod memory;
pub mod vcpu;
pub mod vm;
