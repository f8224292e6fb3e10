//! The `vm` process: one KVM virtual machine (vmd's `vm.c`, `x86_vm.c`).
