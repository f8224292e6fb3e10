//! Emulated platform devices of the `vm` process (vmd's `ns8250.c`,
//! `mc146818.c`, `i8253.c`, `pci.c`, `fw_cfg.c`), one chip per module.
//!
//! Devices never see KVM types: the VM exit loop in `vstate` dispatches port
//! I/O and MMIO through a [`bus::Bus`], and devices raise interrupts through
//! the [`bus::Interrupt`] trait.

pub mod acpi;
pub mod bus;
pub mod cf9;
pub mod i8042;
pub mod pm;
pub mod port80;
pub mod rtc;
pub mod serial;
