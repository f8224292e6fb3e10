//! Tests of the ACPI tables: written to guest memory, then parsed back the
//! way a guest would (RSDP → XSDT → FADT → DSDT/FACS, MADT), and checked
//! with `iasl -d`.

use super::*;
use vm_memory::GuestMemoryMmap;

const MIB: usize = 1 << 20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MIB)]).unwrap()
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Reads a whole SDT at `addr`, checking its signature, length and checksum.
fn table(mem: &GuestMemoryMmap, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
    let head = read(mem, addr, 36);
    assert_eq!(&head[0..4], sig, "signature at {addr:#x}");
    let len = u32_at(&head, 4) as usize;
    assert!(len >= 36, "{sig:?} length {len}");
    let t = read(mem, addr, len);
    assert_eq!(sum(&t), 0, "{sig:?} checksum");
    t
}

/// Everything a guest reaches from the RSDP.
struct Parsed {
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
    facs: Vec<u8>,
    facs_addr: u64,
}

fn parse(mem: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> Parsed {
    let rsdp = read(mem, rsdp_addr.0, 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(sum(&rsdp[0..20]), 0, "RSDP checksum");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    let xsdt = table(mem, u64_at(&rsdp, 24), b"XSDT");
    let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(entries.len(), 2);
    let fadt = table(mem, entries[0], b"FACP");
    let madt = table(mem, entries[1], b"APIC");
    assert_eq!(u32_at(&fadt, 40), 0, "32-bit DSDT must be 0 with X_DSDT");
    let dsdt = table(mem, u64_at(&fadt, 140), b"DSDT");
    let facs_addr = u64_at(&fadt, 132);
    assert_eq!(facs_addr % 64, 0, "FACS alignment");
    let facs = read(mem, facs_addr, 64);
    Parsed {
        fadt,
        madt,
        dsdt,
        facs,
        facs_addr,
    }
}

/// MADT entries as (type, body).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let (t, l) = (madt[off], madt[off + 1] as usize);
        assert!(l >= 2 && off + l <= madt.len(), "bad MADT entry at {off}");
        out.push((t, madt[off..off + l].to_vec()));
        off += l;
    }
    out
}

fn build(vcpus: u32) -> (GuestMemoryMmap, Parsed) {
    let m = mem();
    let rsdp = create_tables(&m, &AcpiLayout::new(vcpus)).unwrap();
    assert_eq!(rsdp, GuestAddress(RSDP_ADDR));
    let p = parse(&m, rsdp);
    (m, p)
}

#[test]
fn every_table_is_reachable_from_the_rsdp_with_valid_checksums() {
    let (_, p) = build(1);
    assert_eq!(&p.facs[0..4], b"FACS");
    assert_eq!(u32_at(&p.facs, 4), 64);
    // Tables stay inside the BIOS area the E820 map reserves.
    assert!(p.facs_addr >= RSDP_ADDR && p.facs_addr < TABLES_END);
}

#[test]
fn madt_has_one_enabled_lapic_per_vcpu_with_ids_in_order() {
    for n in [1u32, 2, 3, 8, 64, 255] {
        let (_, p) = build(n);
        assert_eq!(u32_at(&p.madt, 36), LAPIC_ADDR);
        assert_eq!(u32_at(&p.madt, 40) & 1, 1, "PC-AT compatible");
        let lapics: Vec<_> = madt_entries(&p.madt)
            .into_iter()
            .filter(|(t, _)| *t == 0)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(lapics.len(), n as usize, "{n} vCPUs");
        for (i, e) in lapics.iter().enumerate() {
            assert_eq!(e[1], 8);
            assert_eq!(e[2] as usize, i, "processor uid");
            assert_eq!(e[3] as usize, i, "APIC id");
            assert_eq!(u32_at(e, 4), 1, "enabled");
        }
    }
}

#[test]
fn madt_describes_the_ioapic_overrides_and_nmi() {
    let (_, p) = build(2);
    let entries = madt_entries(&p.madt);
    let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
    assert_eq!(ioapics.len(), 1);
    let io = &ioapics[0].1;
    assert_eq!(io[2], IOAPIC_ID);
    assert_eq!(u32_at(io, 4), IOAPIC_ADDR);
    assert_eq!(u32_at(io, 8), 0, "GSI base");

    let isos: Vec<(u8, u32, u16)> = entries
        .iter()
        .filter(|(t, _)| *t == 2)
        .map(|(_, e)| (e[3], u32_at(e, 4), u16_at(e, 8)))
        .collect();
    assert_eq!(isos, vec![(9, 9, 0x000d)]);

    let nmis: Vec<_> = entries.iter().filter(|(t, _)| *t == 4).collect();
    assert_eq!(nmis.len(), 1);
    assert_eq!(nmis[0].1, vec![4, 6, 0xff, 0, 0, 1]);
}

#[test]
fn pit_remap_adds_the_irq0_override() {
    let m = mem();
    let layout = AcpiLayout {
        pit_on_gsi2: true,
        ..AcpiLayout::new(1)
    };
    let p = parse(&m, create_tables(&m, &layout).unwrap());
    let isos: Vec<(u8, u32, u16)> = madt_entries(&p.madt)
        .iter()
        .filter(|(t, _)| *t == 2)
        .map(|(_, e)| (e[3], u32_at(e, 4), u16_at(e, 8)))
        .collect();
    assert_eq!(isos, vec![(0, 2, 0), (9, 9, 0x000d)]);
}

#[test]
fn fadt_points_at_our_pm_ports_reset_register_and_rtc() {
    let (_, p) = build(1);
    let f = &p.fadt;
    assert_eq!(f[8], 6, "FADT major revision");
    assert_eq!(u32_at(f, 4), 276, "FADT length");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(u32_at(f, 80), 0, "GPE0_BLK");
    assert_eq!([f[88], f[89], f[91]], [4, 2, 4], "block lengths");
    assert_eq!(f[108], 0x32, "CENTURY");
    let boot_arch = u16_at(f, 109);
    assert_eq!(boot_arch & 0b1, 0b1, "legacy devices");
    assert_eq!(boot_arch & 0b10, 0, "no 8042: Linux must not probe it");
    assert_eq!(boot_arch & (1 << 5), 0, "the CMOS RTC is present");
    let flags = u32_at(f, 112);
    assert_eq!(flags & (1 << 4), 0, "power button is a fixed feature");
    assert_ne!(flags & (1 << 5), 0, "no sleep button");
    assert_ne!(flags & (1 << 8), 0, "32-bit PM timer");
    assert_ne!(flags & (1 << 10), 0, "reset register supported");
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    // RESET_REG: system I/O, 8 bits, byte access, port 0xcf9, value 6.
    assert_eq!(&f[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(f, 120), 0xcf9);
    assert_eq!(f[128], 6);
    // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK agree with the 32-bit ones.
    for (off, port, bits) in [(148, 0x600, 32), (172, 0x604, 16), (208, 0x608, 32)] {
        assert_eq!(f[off], 1, "system I/O at {off}");
        assert_eq!(f[off + 1], bits, "width at {off}");
        assert_eq!(u64_at(f, off + 4), port);
    }
}

#[test]
fn dsdt_has_s5_com1_and_the_rtc() {
    let (_, p) = build(1);
    let d = &p.dsdt;
    assert_eq!(d[8], 2, "DSDT revision 2");
    let find = |needle: &[u8]| d.windows(needle.len()).position(|w| w == needle);
    // Name(_S5_, Package(2) {5, Zero}): NameOp, name, PackageOp, len, count,
    // BytePrefix 5, ZeroOp.
    let s5 = find(b"_S5_").expect("_S5_ present");
    assert_eq!(d[s5 - 1], 0x08, "NameOp");
    assert_eq!(&d[s5 + 4..s5 + 10], &[0x12, 5, 2, 0x0a, 5, 0x00]);
    assert!(find(b"COM1").is_some());
    // EISAID("PNP0501") and EISAID("PNP0B00") as DWordConst.
    assert!(find(&[0x0c, 0x41, 0xd0, 0x05, 0x01]).is_some());
    assert!(find(&[0x0c, 0x41, 0xd0, 0x0b, 0x00]).is_some());
    // IO(Decode16, 0x3f8, 0x3f8, 1, 8) and the extended IRQ 4 descriptor.
    assert!(find(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]).is_some());
    assert!(find(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]).is_some());
    assert!(find(&[
        0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02, 0x89, 0x06, 0x00, 0x03, 0x01, 0x08
    ])
    .is_some());
}

#[test]
fn bad_layouts_are_refused() {
    assert!(matches!(
        build_tables(&AcpiLayout::new(0)),
        Err(AcpiError::VcpuCount(0))
    ));
    assert!(matches!(
        build_tables(&AcpiLayout::new(256)),
        Err(AcpiError::VcpuCount(256))
    ));
    let small = AcpiLayout {
        tables_end: GuestAddress(RSDP_ADDR + 0x100),
        ..AcpiLayout::new(4)
    };
    assert!(matches!(
        build_tables(&small),
        Err(AcpiError::TooBig { room: 0xc0, .. })
    ));
    let overlap = AcpiLayout {
        rsdp_addr: GuestAddress(RSDP_ADDR + 0x200),
        ..AcpiLayout::new(1)
    };
    assert!(matches!(
        build_tables(&overlap),
        Err(AcpiError::RsdpOverlap(_))
    ));
    for (rsdp, start, end) in [
        (RSDP_ADDR, 0x2000, 0x1000),
        (RSDP_ADDR, u64::MAX - 8, u64::MAX),
        (u64::MAX - 4, 0x1000, 0x2000),
    ] {
        let bad = AcpiLayout {
            rsdp_addr: GuestAddress(rsdp),
            tables_addr: GuestAddress(start),
            tables_end: GuestAddress(end),
            ..AcpiLayout::new(1)
        };
        assert!(
            matches!(build_tables(&bad), Err(AcpiError::BadArea { .. })),
            "{rsdp:#x} {start:#x}..{end:#x}"
        );
    }
    // Guest memory that does not reach the table area.
    let tiny = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    assert!(matches!(
        create_tables(&tiny, &AcpiLayout::new(1)),
        Err(AcpiError::Write { .. })
    ));
}

#[test]
fn tables_do_not_overlap_and_fit_for_the_largest_guest() {
    let blobs = build_tables(&AcpiLayout::new(MAX_VCPUS)).unwrap();
    let mut spans: Vec<(u64, u64)> = blobs
        .iter()
        .map(|b| (b.addr.0, b.addr.0 + b.bytes.len() as u64))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
    }
    assert!(spans.last().unwrap().1 <= TABLES_END);
}

/// `iasl -d` (Debian's acpica-tools, installed by scripts/setup) must
/// disassemble every table without an error or a warning.
#[test]
fn iasl_disassembles_the_tables_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = build(4);
    let mut files = Vec::new();
    for (name, bytes) in [("dsdt", &p.dsdt), ("facp", &p.fadt), ("apic", &p.madt)] {
        let path = dir.path().join(format!("{name}.dat"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    for f in &files {
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(f)
            .current_dir(dir.path())
            .output()
            .expect("iasl not found: run scripts/setup (package acpica-tools)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {f:?} failed:\n{text}");
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("error") || lower.contains("0 errors"),
            "iasl -d {f:?}:\n{text}"
        );
        assert!(!lower.contains("warning"), "iasl -d {f:?}:\n{text}");
        let dsl = std::fs::read_to_string(f.with_extension("dsl")).unwrap();
        assert!(!dsl.to_lowercase().contains("error"), "{f:?}:\n{dsl}");
    }
    let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
    assert!(dsl.contains("Name (_S5, Package (0x02)"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0501\")"), "{dsl}");
    let madt = std::fs::read_to_string(dir.path().join("apic.dsl")).unwrap();
    assert_eq!(madt.matches("[Processor Local APIC]").count(), 4, "{madt}");
}

/// ACPICA, the ACPI core Linux uses, run in user space by `acpiexec`
/// (acpica-tools): it must load the FADT, DSDT and MADT without complaint
/// and evaluate `\_S5_` and the `_CRS` of our devices as Linux will.
#[test]
fn acpica_loads_the_tables_and_evaluates_s5_and_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = build(2);
    let mut args = vec!["-b".to_string()];
    args.push(r"evaluate \_S5_; evaluate \_SB.COM1._CRS; evaluate \_SB.RTC_._CRS".into());
    for (name, bytes) in [("facp", &p.fadt), ("dsdt", &p.dsdt), ("apic", &p.madt)] {
        let path = dir.path().join(format!("{name}.dat"));
        std::fs::write(&path, bytes).unwrap();
        args.push(path.to_string_lossy().into_owned());
    }
    let out = std::process::Command::new("acpiexec")
        .args(&args)
        .current_dir(dir.path())
        .output()
        .expect("acpiexec not found: run scripts/setup (package acpica-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for line in text.lines() {
        assert!(
            !line.contains("ACPI Error")
                && !line.contains("ACPI Warning")
                && !line.contains("ACPI BIOS"),
            "{line}\n{text}"
        );
        // acpiexec's self-tests poke GPE blocks and the PM2 arbiter bit,
        // which we do not have; anything else unexpected is a failure.
        if line.contains("Unexpected") {
            assert!(
                line.contains("Gpe") || line.contains("BitRegister"),
                "{line}\n{text}"
            );
        }
    }
    assert!(text.contains("ACPI: FACP"), "{text}");
    assert!(text.contains("ACPI: APIC"), "{text}");
    let s5 = text.find(r"Evaluation of \_S5_").expect("_S5_ evaluated");
    assert!(
        text[s5..].starts_with(r"Evaluation of \_S5_ returned")
            && text[s5..].contains("[Integer] = 0000000000000005"),
        "{text}"
    );
    assert!(
        text.contains("47 01 F8 03 F8 03 01 08 89 06 00 03 01 04"),
        "{text}"
    );
    assert!(
        text.contains("47 01 70 00 70 00 01 02 89 06 00 03 01 08"),
        "{text}"
    );
}
