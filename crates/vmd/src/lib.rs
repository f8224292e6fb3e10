//! vmd for Linux/KVM: the daemon's process roles (vmd's `vmd.c`, `control.c`,
//! `vmm.c`, `vm.c`, `priv.c`), one module each, shared by the `vmd` binary
//! and the foreground runner `vm-run`.

pub mod parent;
pub mod vm;
