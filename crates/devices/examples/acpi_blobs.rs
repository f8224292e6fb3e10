//! Writes our ACPI tables as files and prints the QEMU arguments that load
//! them into a guest (`-device loader`), with the RSDP at 0x8000000: used by
//! `crates/devices/scripts/qemu-acpi-check` to boot the real Linux guest on
//! our tables under QEMU's q35, whose PM, reset, RTC and COM1 ports are
//! where our FADT and DSDT say ours are.
//!
//! Usage: `acpi_blobs OUTDIR VCPUS`.

use std::path::PathBuf;

use devices::acpi::{build_tables, AcpiLayout};
use vm_memory::GuestAddress;

/// Where the tables go in the QEMU guest (the kernel gets `acpi_rsdp=` and
/// a `memmap=` reservation for this range).
const BASE: u64 = 0x800_0000;
const SIZE: u64 = 0x2_0000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(vcpus)) = (args.next(), args.next()) else {
        return Err("usage: acpi_blobs OUTDIR VCPUS".into());
    };
    let dir = PathBuf::from(dir);
    let layout = AcpiLayout {
        vcpus: vcpus.parse()?,
        rsdp_addr: GuestAddress(BASE),
        tables_addr: GuestAddress(BASE + 0x40),
        tables_end: GuestAddress(BASE + SIZE),
        // QEMU routes the PIT to IOAPIC pin 2.
        pit_on_gsi2: true,
    };
    let mut out = String::new();
    for (i, blob) in build_tables(&layout)?.iter().enumerate() {
        let file = dir.join(format!("acpi{i}.bin"));
        std::fs::write(&file, &blob.bytes)?;
        out += &format!(
            " -device loader,file={},addr={:#x},force-raw=on",
            file.display(),
            blob.addr.0
        );
    }
    println!("{}", out.trim_start());
    Ok(())
}
