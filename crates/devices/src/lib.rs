//! Emulated platform devices of the `vm` process (vmd's `ns8250.c` and
//! `mc146818.c`; `pci.c` and `fw_cfg.c` come later, and KVM's in-kernel
//! irqchip and PIT stand in for `i8259.c` and `i8253.c`), one chip per
//! module, plus the ACPI tables and registers Linux needs.
//!
//! Devices never see KVM types: the VM exit loop in `vstate` dispatches port
//! I/O and MMIO through a [`bus::Bus`], and devices raise interrupts through
//! the [`bus::Interrupt`] trait (edges with `trigger`, the level-triggered
//! SCI with `set_level`) and ask for power off or reset through
//! [`bus::PowerEvents`].
//!
//! Wiring a VM, in the runtime:
//! 1. [`platform::Platform::attach`] builds COM1, the RTC/CMOS, the i8042,
//!    port 0x80, the ACPI PM block, the 0xcf9 reset register and the quiet
//!    probe ranges, and maps them on the I/O bus (the table of ports and
//!    IRQs is in [`platform`]).
//! 2. [`acpi::create_tables`] writes RSDP/XSDT/FADT/FACS/DSDT/MADT into
//!    guest memory and returns the RSDP address for the boot protocol.
//! 3. The event loop feeds console input to
//!    [`serial::Serial::enqueue_raw_bytes`] and presses the power button
//!    with [`pm::Pm::press_power_button`].
//!
//! Each module documents its ports, IRQ and construction API.

pub mod acpi;
pub mod bus;
pub mod cf9;
pub mod i8042;
pub mod platform;
pub mod pm;
pub mod port80;
pub mod rtc;
pub mod serial;
