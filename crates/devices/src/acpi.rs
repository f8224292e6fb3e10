//! ACPI tables for a Linux guest: RSDP, XSDT, FADT, FACS, DSDT and MADT,
//! built with `acpi_tables` (vmd has none: OpenBSD guests find their
//! devices without ACPI, but Linux needs it to see every vCPU and the
//! IOAPIC, to power off, to reboot and to get a power button).
//!
//! Construction: [`create_tables`]`(&mem, &layout)` writes the tables into
//! guest memory and returns the address of the RSDP, which the runtime hands
//! to the kernel (`boot_params.acpi_rsdp_addr`, PVH `rsdp_paddr`; at
//! 0xe0000 a legacy scan finds it too). [`build_tables`] returns the same
//! tables as byte blobs with their addresses, for callers that place them
//! otherwise. [`AcpiLayout::new`] gives the default placement: RSDP at
//! [`RSDP_ADDR`] (0xe0000), the other tables after it up to [`TABLES_END`]
//! (0x100000); the runtime must mark 0xe0000-0xfffff reserved in the E820
//! map.
//!
//! What the guest is told:
//! - FADT (revision 6.5, not hardware-reduced): PM1a event block at
//!   [`PM1A_EVT_BLK`] (4 bytes), PM1a control block at [`PM1A_CNT_BLK`] (2),
//!   32-bit PM timer at [`PM_TMR_BLK`] (4), SCI on IRQ [`SCI_IRQ`] (9), no
//!   SMI command port (always in ACPI mode), no GPE blocks; reset register
//!   = I/O port 0xcf9 ([`crate::cf9`]) value 6; power button as a fixed
//!   feature, no sleep button; RTC century byte 0x32 ([`crate::rtc`]);
//!   `IAPC_BOOT_ARCH`: legacy devices, no VGA, no ASPM, and no 8042 (see
//!   below).
//! - DSDT: `\_S5_` = {5, 0} (S5 is `SLP_TYP` 5, see [`crate::pm`]); COM1
//!   (`PNP0501`, I/O 0x3f8-0x3ff, IRQ 4) and the RTC (`PNP0B00`, I/O
//!   0x70-0x71, IRQ 8) under `\_SB`. No PCI root bridge yet.
//! - MADT: one enabled local APIC per vCPU, ACPI processor UID and APIC id
//!   both 0..N-1 (so the runtime must give vCPU i APIC id i); the IOAPIC,
//!   id 0, at 0xfec00000, GSI base 0; an interrupt source override for
//!   IRQ 9 → GSI 9, level, active high (the SCI); LINT1 of every CPU is NMI.
//!   The PC-AT flag is set: there are 8259 PICs. ISA IRQs 0-15 are
//!   otherwise identity-mapped to GSIs 0-15, which is what KVM's default
//!   GSI routing does with the in-kernel PIT (GSI 0 → IOAPIC pin 0). A
//!   runtime that reroutes the PIT to pin 2 like QEMU sets
//!   [`AcpiLayout::pit_on_gsi2`] to add the classic IRQ 0 → GSI 2 override.
//! - FACS: empty (no S3, no global lock owner), 64-byte aligned.
//!
//! Why the FADT hides the 8042: with the 8042 flag set and no PS/2 device
//! in the DSDT, Linux's i8042 driver probes the ports directly and waits
//! for keyboard and mouse replies and IRQs 1 and 12 that a controller
//! without devices never sends (hundreds of milliseconds of boot). With the
//! flag clear it leaves the chip alone. The chip is still there for its
//! reset line: Linux's reboot fallback and firmware write 0xfe to port 0x64
//! without a driver, and [`crate::i8042`] answers them.
//!
//! Tests: the unit tests parse the tables back and run ACPICA on them
//! (`iasl -d`, `acpiexec`). `crates/devices/scripts/qemu-acpi-check [N]`
//! boots the real test guest (Debian's 6.1 kernel) on these tables under
//! QEMU's q35, whose ICH9 PM block, reset register, RTC and COM1 sit at the
//! same ports, presses the power button and checks what Linux reports (N
//! CPUs, S5, COM1 and the RTC from the DSDT, no i8042 probe, power off).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

pub use crate::pm::{PM1A_CNT_BLK, PM1A_EVT_BLK, PM_TMR_BLK, SCI_IRQ};
use crate::pm::{PM1_CNT_LEN, PM1_EVT_LEN, PM_TMR_LEN, SLP_TYP_S5};
use crate::{cf9, rtc, serial};

/// Default address of the RSDP: the start of the BIOS area a legacy scan
/// searches.
pub const RSDP_ADDR: u64 = 0x000e_0000;
/// End (exclusive) of the default area for the tables.
pub const TABLES_END: u64 = 0x0010_0000;
/// Local APIC base address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The IOAPIC's id.
pub const IOAPIC_ID: u8 = 0;
/// Most vCPUs an xAPIC MADT can describe (APIC id 255 is the broadcast id).
pub const MAX_VCPUS: u32 = 255;

const OEM_ID: [u8; 6] = *b"VMDKVM";
const OEM_TABLE_ID: [u8; 8] = *b"VMDKVM  ";
const OEM_REVISION: u32 = 1;
/// DSDT revision 2: AML integers are 64 bits.
const DSDT_REVISION: u8 = 2;
const MADT_REVISION: u8 = 5;
const TABLE_HEADER_LEN: u32 = 36;

const MADT_PCAT_COMPAT: u32 = 1;
const MADT_TYPE_ISO: u8 = 2;
const MADT_TYPE_LAPIC_NMI: u8 = 4;
/// MPS INTI flags: active high, level triggered.
const INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000d;
/// MPS INTI flags: conforms to the bus (ISA: edge, active high).
const INTI_CONFORMS: u16 = 0;
/// "All processors" in a local APIC NMI entry.
const ALL_PROCESSORS: u8 = 0xff;

const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const BOOT_ARCH_NO_ASPM: u16 = 1 << 4;

/// Tables are placed on this alignment (the FACS needs 64).
const ALIGN: u64 = 64;
/// Highest guest physical address x86-64 can have (52 bits), which keeps
/// the placement arithmetic far from overflow.
const MAX_PHYS: u64 = 1 << 52;

/// Errors from building or writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The vCPU count is zero or more than an xAPIC MADT can hold.
    #[error("cannot describe {0} vCPUs in the MADT (1 to 255)")]
    VcpuCount(u32),
    /// The tables do not fit between the table address and the end.
    #[error("ACPI tables need {need} bytes, {room} available")]
    TooBig {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        room: u64,
    },
    /// The RSDP lies inside the table area.
    #[error("RSDP at {0:#x} overlaps the ACPI table area")]
    RsdpOverlap(u64),
    /// The table area is reversed or lies beyond physical addresses.
    #[error("ACPI table area {start:#x}..{end:#x} is not usable")]
    BadArea {
        /// Start of the area (or the RSDP address).
        start: u64,
        /// End of the area.
        end: u64,
    },
    /// Writing a table to guest memory failed.
    #[error("cannot write ACPI table at {addr:#x}")]
    Write {
        /// Guest address of the table.
        addr: u64,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Where the tables go and what they describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiLayout {
    /// Number of vCPUs (APIC ids 0..vcpus-1).
    pub vcpus: u32,
    /// Address of the RSDP (36 bytes, 16-byte aligned).
    pub rsdp_addr: GuestAddress,
    /// Start of the area for the other tables.
    pub tables_addr: GuestAddress,
    /// End (exclusive) of the area for the other tables.
    pub tables_end: GuestAddress,
    /// Whether the MADT says ISA IRQ 0 (the PIT) arrives on GSI 2, as on
    /// real PCs and in QEMU. Leave it clear with KVM's default GSI routing,
    /// which delivers the in-kernel PIT (GSI 0) on IOAPIC pin 0; set it only
    /// if the runtime routes GSI 0 to IOAPIC pin 2 with
    /// `KVM_SET_GSI_ROUTING`.
    pub pit_on_gsi2: bool,
}

impl AcpiLayout {
    /// The default placement for `vcpus` vCPUs: RSDP at 0xe0000, tables from
    /// 0xe0040 to 0x100000, KVM's default identity routing of ISA IRQs.
    pub fn new(vcpus: u32) -> Self {
        AcpiLayout {
            vcpus,
            rsdp_addr: GuestAddress(RSDP_ADDR),
            tables_addr: GuestAddress(RSDP_ADDR + ALIGN),
            tables_end: GuestAddress(TABLES_END),
            pit_on_gsi2: false,
        }
    }
}

/// One table and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// The table's bytes.
    pub bytes: Vec<u8>,
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

/// The DSDT: the sleep states and the legacy devices.
fn dsdt() -> Vec<u8> {
    let s5_pkg = aml::Package::new(vec![&SLP_TYP_S5, &aml::ZERO]);
    let s5 = aml::Name::new(aml::Path::new("_S5_"), &s5_pkg);

    let com1_io = aml::IO::new(
        serial::COM1_PORT as u16,
        serial::COM1_PORT as u16,
        1,
        serial::SERIAL_PORT_LEN as u8,
    );
    // Consumer, edge, active high, exclusive.
    let com1_irq = aml::Interrupt::new(true, true, false, false, serial::COM1_IRQ);
    let com1_crs = aml::ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = aml::EISAName::new("PNP0501");
    let com1_names = [
        aml::Name::new(aml::Path::new("_HID"), &com1_hid),
        aml::Name::new(aml::Path::new("_UID"), &aml::ONE),
        aml::Name::new(aml::Path::new("_CRS"), &com1_crs),
    ];
    let com1 = aml::Device::new(
        aml::Path::new("COM1"),
        com1_names.iter().map(|n| n as &dyn Aml).collect(),
    );

    let rtc_io = aml::IO::new(
        rtc::RTC_PORT as u16,
        rtc::RTC_PORT as u16,
        1,
        rtc::RTC_PORT_LEN as u8,
    );
    let rtc_irq = aml::Interrupt::new(true, true, false, false, rtc::RTC_IRQ);
    let rtc_crs = aml::ResourceTemplate::new(vec![&rtc_io, &rtc_irq]);
    let rtc_hid = aml::EISAName::new("PNP0B00");
    let rtc_names = [
        aml::Name::new(aml::Path::new("_HID"), &rtc_hid),
        aml::Name::new(aml::Path::new("_CRS"), &rtc_crs),
    ];
    let rtc = aml::Device::new(
        aml::Path::new("RTC_"),
        rtc_names.iter().map(|n| n as &dyn Aml).collect(),
    );

    let sb = aml::Scope::new(aml::Path::new("\\_SB_"), vec![&com1, &rtc]);

    let mut body = aml_bytes(&s5);
    sb.to_aml_bytes(&mut body);
    let mut table = Sdt::new(
        *b"DSDT",
        TABLE_HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    table.append_slice(&body);
    table.as_slice().to_vec()
}

fn io_gas(port: u16, len: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, len * 8, 0, access, u64::from(port))
}

/// The FADT, pointing at the FACS and the DSDT.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_64(facs)
        .dsdt_64(dsdt)
        .preferred_pm_profile(PmProfile::Unspecified)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup);
    // No SMI_CMD: the machine is in ACPI mode from reset (SCI_EN is set).
    f.sci_int = (SCI_IRQ as u16).into();
    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_len = PM_TMR_LEN;
    f.x_pm1a_evt_blk = io_gas(PM1A_EVT_BLK, PM1_EVT_LEN, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_gas(PM1A_CNT_BLK, PM1_CNT_LEN, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_gas(PM_TMR_BLK, PM_TMR_LEN, AccessSize::DwordAccess);
    f.century = rtc::CENTURY_REG;
    f.iapc_boot_arch = (BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_ASPM).into();
    f.reset_reg = io_gas(cf9::RESET_PORT as u16, 1, AccessSize::ByteAccess);
    f.reset_value = cf9::RESET_VALUE;
    aml_bytes(&f.finalize())
}

/// An interrupt source override (MADT type 2).
fn iso(irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut v = vec![MADT_TYPE_ISO, 10, 0 /* ISA */, irq];
    v.extend_from_slice(&gsi.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v
}

/// The MADT: local APICs, the IOAPIC, overrides and NMI wiring.
fn madt(vcpus: u32, pit_on_gsi2: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    // vcpus <= MAX_VCPUS was checked by the caller, so ids fit in a byte.
    for id in 0..vcpus as u8 {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut body);
    }
    IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0).to_aml_bytes(&mut body);
    if pit_on_gsi2 {
        body.extend(iso(0, 2, INTI_CONFORMS));
    }
    body.extend(iso(SCI_IRQ as u8, SCI_IRQ, INTI_ACTIVE_HIGH_LEVEL));
    // LINT1 of all processors is wired to NMI.
    body.extend_from_slice(&[MADT_TYPE_LAPIC_NMI, 6, ALL_PROCESSORS]);
    body.extend_from_slice(&INTI_CONFORMS.to_le_bytes());
    body.push(1);

    let mut table = Sdt::new(
        *b"APIC",
        TABLE_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    table.append_slice(&body);
    table.as_slice().to_vec()
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// Builds every table for `layout`: the RSDP first, then FACS, DSDT, FADT,
/// MADT and XSDT, each at its address.
pub fn build_tables(layout: &AcpiLayout) -> Result<Vec<Blob>, AcpiError> {
    if layout.vcpus == 0 || layout.vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount(layout.vcpus));
    }
    let (first, end, rsdp) = (
        layout.tables_addr.0,
        layout.tables_end.0,
        layout.rsdp_addr.0,
    );
    if first > end || end > MAX_PHYS || rsdp > MAX_PHYS {
        return Err(AcpiError::BadArea {
            start: first.min(rsdp),
            end,
        });
    }
    let start = align_up(first);
    if rsdp.saturating_add(Rsdp::len() as u64) > start && rsdp < end {
        return Err(AcpiError::RsdpOverlap(rsdp));
    }

    let mut blobs = Vec::new();
    let mut next = start;
    let mut place = |bytes: Vec<u8>| {
        let addr = next;
        next = align_up(addr + bytes.len() as u64);
        blobs.push(Blob {
            addr: GuestAddress(addr),
            bytes,
        });
        addr
    };

    let facs = place(aml_bytes(&FACS::new()));
    let dsdt = place(dsdt());
    let fadt = place(fadt(facs, dsdt));
    let madt = place(madt(layout.vcpus, layout.pit_on_gsi2));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = place(aml_bytes(&xsdt));

    let need = blobs
        .last()
        .map_or(0, |b| b.addr.0 + b.bytes.len() as u64 - start);
    if start.saturating_add(need) > end {
        return Err(AcpiError::TooBig {
            need,
            room: end.saturating_sub(start),
        });
    }
    blobs.insert(
        0,
        Blob {
            addr: layout.rsdp_addr,
            bytes: aml_bytes(&Rsdp::new(OEM_ID, xsdt)),
        },
    );
    Ok(blobs)
}

/// Writes the tables for `layout` into `mem`; returns the RSDP's address.
pub fn create_tables<M: GuestMemory>(
    mem: &M,
    layout: &AcpiLayout,
) -> Result<GuestAddress, AcpiError> {
    for blob in build_tables(layout)? {
        mem.write_slice(&blob.bytes, blob.addr)
            .map_err(|source| AcpiError::Write {
                addr: blob.addr.0,
                source,
            })?;
    }
    Ok(layout.rsdp_addr)
}

#[cfg(test)]
mod tests;
