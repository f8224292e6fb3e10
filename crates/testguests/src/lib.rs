//! Tiny freestanding x86 guests for fast tests on any `/dev/kvm`, even
//! `kvm_pvm` where guest kernel mode is emulated: each does a few
//! instructions of kernel-mode work and talks to the VMM through COM1 and
//! the ACPI/reset ports. Built from `guests/*.S` by `build.rs` with the
//! host's binutils; each constant is the path of an ELF64 image that
//! `vm-run -b` loads through the ELF path.
//!
//! | guest        | entry | does                                                  | outcome |
//! |--------------|-------|-------------------------------------------------------|---------|
//! | `HELLO`      | PVH   | checks the start-info magic, prints `HELLO-PVH`       | power off |
//! | `HELLO64`    | 64-bit| checks the zero page, prints `HELLO-64`               | power off |
//! | `REBOOT`     | 64-bit| prints `REBOOT-CF9`, writes 0x6 to port 0xcf9         | reboot |
//! | `REBOOT_KBD` | 64-bit| prints `REBOOT-KBD`, writes 0xfe to port 0x64         | reboot |
//! | `TRIPLE`     | 64-bit| prints `TRIPLE`, `ud2` with an empty IDT              | reboot |
//! | `INT3`       | 64-bit| prints `INT3`, `int3` in kernel mode                  | failure on kvm_pvm |
//! | `CPUS`       | 64-bit| counts MADT local APICs, starts APs with INIT/SIPI, prints `CPUS=n ONLINE=m` | power off |
//! | `IDLE`       | 64-bit| prints `IDLE-READY`, `sti; hlt` until the power button's SCI, prints `POWER-BUTTON` | power off |
//! | `BADIO`      | 64-bit| unclaimed ports/MMIO, odd CMOS/PM accesses, prints `BADIO-SURVIVED` | power off |
//! | `IDLE_IOAPIC`| 64-bit| as `IDLE`, the SCI through the IOAPIC (level) and LAPIC, prints `IOAPIC-READY` | power off |
//! | `ECHO`       | 64-bit| prints `ECHO-READY`, echoes COM1 input until `q`      | power off |
//! | `MEM`        | 64-bit| sums the zero page's E820 map, prints `E820-RAM-KB=n TOP-KB=m` | power off |
//! | `TICKER`     | 64-bit| prints `TICK-READY`, then `.` forever                 | none (pause/resume, terminate) |

macro_rules! guest {
    ($konst:ident, $file:literal) => {
        #[doc = concat!("Path of the `", $file, "` guest image.")]
        pub const $konst: &str = concat!(env!("OUT_DIR"), "/", $file, ".elf");
    };
}

guest!(HELLO, "hello");
guest!(HELLO64, "hello64");
guest!(REBOOT, "reboot");
guest!(REBOOT_KBD, "reboot-kbd");
guest!(TRIPLE, "triple");
guest!(INT3, "int3");
guest!(CPUS, "cpus");
guest!(IDLE, "idle");
guest!(BADIO, "badio");
guest!(ECHO, "echo");
guest!(TICKER, "ticker");
guest!(MEM, "mem");
guest!(IDLE_IOAPIC, "idle-ioapic");

/// Every guest, by name, for tools that list them.
pub const ALL: &[(&str, &str)] = &[
    ("hello", HELLO),
    ("hello64", HELLO64),
    ("reboot", REBOOT),
    ("reboot-kbd", REBOOT_KBD),
    ("triple", TRIPLE),
    ("int3", INT3),
    ("cpus", CPUS),
    ("idle", IDLE),
    ("badio", BADIO),
    ("echo", ECHO),
    ("ticker", TICKER),
    ("mem", MEM),
    ("idle-ioapic", IDLE_IOAPIC),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_guest_is_an_elf64_x86_64_executable() {
        for (name, path) in super::ALL {
            let b = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&b[..4], b"\x7fELF", "{name}");
            assert_eq!(b[4], 2, "{name}: ELFCLASS64");
            assert_eq!(u16::from_le_bytes([b[18], b[19]]), 62, "{name}: EM_X86_64");
            let entry = u64::from_le_bytes(b[24..32].try_into().unwrap());
            assert!(entry >= 0x20_0000, "{name}: entry above 2 MiB");
        }
    }

    #[test]
    fn only_hello_has_a_pvh_note() {
        let has_note = |p: &str| std::fs::read(p).unwrap().windows(4).any(|w| w == b"Xen\0");
        assert!(has_note(super::HELLO));
        assert!(!has_note(super::HELLO64));
        assert!(!has_note(super::CPUS));
    }
}
