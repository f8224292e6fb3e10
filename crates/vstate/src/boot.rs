//! Kernel loading and boot parameters: bzImage, ELF vmlinux (PVH or 64-bit
//! entry), gzip'd ELF, initrd and command line (vmd's `loadfile_elf.c`).
//!
//! Fixed low-memory layout used for booting (all below 640 KiB):
//!
//! | address  | what                                            |
//! |----------|-------------------------------------------------|
//! | 0x500    | GDT (null, code64, code32, data, TSS)           |
//! | 0x520    | empty IDT                                       |
//! | 0x6000   | PVH `hvm_start_info`, modules list at 0x6040    |
//! | 0x7000   | zero page (`boot_params`) or the PVH memory map |
//! | 0x8ff0   | initial stack pointer                           |
//! | 0x9000   | PML4, PDPT at 0xa000, 4 PDs at 0xb000 (4 GiB identity map, 2 MiB pages) |
//! | 0x20000  | kernel command line                             |

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::{e820_map, HIGH_RAM_START, MMIO_HOLE_START};

/// Guest address of the GDT.
pub const GDT_START: u64 = 0x500;
/// Guest address of the (empty) IDT.
pub const IDT_START: u64 = 0x520;
/// Guest address of the PVH start info.
pub const PVH_INFO_START: u64 = 0x6000;
/// Guest address of the PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// Guest address of the PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Guest address of the zero page.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit entry.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Guest address of the PML4.
pub const PML4_START: u64 = 0x9000;
/// Guest address of the PDPT.
pub const PDPT_START: u64 = 0xa000;
/// Guest address of the first of the four page directories.
pub const PD_START: u64 = 0xb000;
/// Guest address of the kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Longest command line for ELF/PVH kernels (Linux's x86 COMMAND_LINE_SIZE, with the NUL).
pub const CMDLINE_MAX_ELF: usize = 2048;

/// GDT selectors.
pub const SEL_CODE64: u16 = 0x08;
/// 32-bit flat code (PVH entry).
pub const SEL_CODE32: u16 = 0x10;
/// Flat data.
pub const SEL_DATA: u16 = 0x18;
/// Task state segment.
pub const SEL_TSS: u16 = 0x20;

const GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code64
    gdt_entry(0xc09b, 0, 0xfffff), // code32
    gdt_entry(0xc093, 0, 0xfffff), // data
    gdt_entry(0x808b, 0, 0xfffff), // TSS
];

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const BZ_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const XLF_KERNEL_64: u16 = 1;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Errors from loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The file is neither an ELF kernel, a gzip'd ELF kernel, nor a bzImage.
    #[error("not a kernel (neither a bzImage nor an ELF or gzip'd ELF image)")]
    NotAKernel,
    /// Reading the kernel file failed.
    #[error("could not read the kernel")]
    ReadKernel(#[source] std::io::Error),
    /// The kernel's bytes could not be placed in guest memory.
    #[error("could not load the kernel")]
    Load(#[source] linux_loader::loader::Error),
    /// A bzImage without the 64-bit entry point.
    #[error("bzImage has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)")]
    No64BitEntry,
    /// Decompressing a gzip'd kernel failed.
    #[error("could not decompress the kernel")]
    Gunzip(#[source] std::io::Error),
    /// The kernel (after decompression) is bigger than guest memory.
    #[error("kernel does not fit in guest memory")]
    KernelTooBig,
    /// The command line does not fit.
    #[error("kernel command line too long ({len} bytes, at most {max})")]
    CmdlineTooLong {
        /// Length given.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The command line has a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Reading the initrd failed.
    #[error("could not read the initrd")]
    ReadInitrd(#[source] std::io::Error),
    /// No room for the initrd between the kernel and the top of low RAM.
    #[error("initrd of {size} bytes does not fit in guest memory")]
    InitrdTooBig {
        /// Initrd size.
        size: u64,
    },
    /// Writing a boot structure into guest memory failed.
    #[error("could not write boot structures into guest memory")]
    Write,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, `ebx` = start info.
    Pvh {
        /// Entry point.
        entry: u64,
        /// Address of `hvm_start_info`.
        start_info: u64,
    },
    /// Linux 64-bit boot protocol: long mode, identity paging, `rsi` = zero page.
    Linux64 {
        /// Entry point.
        entry: u64,
        /// Address of `boot_params`.
        zero_page: u64,
    },
}

/// What to boot.
pub struct BootSpec<'a> {
    /// The kernel image.
    pub kernel: &'a mut File,
    /// The initial ramdisk, if any.
    pub initrd: Option<&'a mut File>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Address of the ACPI RSDP, if the VMM wrote tables.
    pub rsdp: Option<u64>,
}

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register contents for GDT selector `sel`.
pub fn segment(sel: u16) -> kvm_bindings::kvm_segment {
    let e = GDT[usize::from(sel >> 3)];
    let base = ((e >> 16) & 0xff_ffff) | ((e >> 32) & 0xff00_0000);
    let limit_raw = (e & 0xffff) | ((e >> 32) & 0xf_0000);
    let g = ((e >> 55) & 1) as u8;
    let limit = if g == 1 {
        ((limit_raw << 12) | 0xfff) as u32
    } else {
        limit_raw as u32
    };
    kvm_bindings::kvm_segment {
        base,
        limit,
        selector: sel,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the GDT, the empty IDT and the identity page tables (4 GiB).
pub fn write_boot_structures(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_START + 8 * i as u64))
            .map_err(|_| BootError::Write)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|_| BootError::Write)?;
    mem.write_obj(PDPT_START | 0x3, GuestAddress(PML4_START))
        .map_err(|_| BootError::Write)?;
    // The four page directories are contiguous: build them in one buffer.
    let mut pds = Vec::with_capacity(4 * 512 * 8);
    for i in 0..4u64 {
        let pd = PD_START + i * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPT_START + i * 8))
            .map_err(|_| BootError::Write)?;
        for j in 0..512u64 {
            // Present, writable, 2 MiB page.
            let entry = (i << 30) | (j << 21) | 0x83;
            pds.extend_from_slice(&entry.to_le_bytes());
        }
    }
    mem.write_slice(&pds, GuestAddress(PD_START))
        .map_err(|_| BootError::Write)?;
    Ok(())
}

/// GDT limit for the GDTR.
pub fn gdt_limit() -> u16 {
    (GDT.len() * 8 - 1) as u16
}

enum Kind {
    Elf,
    Gzip,
    BzImage,
}

fn sniff(kernel: &mut File) -> Result<Kind, BootError> {
    let mut head = [0u8; 0x210];
    kernel.rewind().map_err(BootError::ReadKernel)?;
    let mut n = 0;
    while n < head.len() {
        match kernel.read(&mut head[n..]).map_err(BootError::ReadKernel)? {
            0 => break,
            k => n += k,
        }
    }
    if n >= 4 && head[..4] == ELF_MAGIC {
        Ok(Kind::Elf)
    } else if n >= 2 && head[..2] == GZIP_MAGIC {
        Ok(Kind::Gzip)
    } else if n >= 0x206
        && u32::from_le_bytes([head[0x202], head[0x203], head[0x204], head[0x205]]) == BZ_HDR_MAGIC
    {
        Ok(Kind::BzImage)
    } else {
        Err(BootError::NotAKernel)
    }
}

/// Decompresses a gzip'd kernel into a memfd, at most `limit` bytes.
fn gunzip(kernel: &mut File, limit: u64) -> Result<File, BootError> {
    kernel.rewind().map_err(BootError::ReadKernel)?;
    let name = c"vmd-kernel";
    // SAFETY: valid NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(BootError::Gunzip(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let mut out = unsafe { File::from_raw_fd(fd) };
    let mut dec = flate2::read::GzDecoder::new(&mut *kernel).take(limit + 1);
    let n = std::io::copy(&mut dec, &mut out).map_err(BootError::Gunzip)?;
    if n > limit {
        return Err(BootError::KernelTooBig);
    }
    out.rewind().map_err(BootError::Gunzip)?;
    Ok(out)
}

struct Loaded {
    entry: EntryKind,
    kernel_end: u64,
    header: Option<setup_header>,
}

enum EntryKind {
    Pvh(u64),
    Linux64(u64),
}

fn load_elf(mem: &GuestMemoryMmap, file: &mut File) -> Result<Loaded, BootError> {
    let r =
        Elf::load(mem, None, file, Some(GuestAddress(HIGH_RAM_START))).map_err(|e| match e {
            linux_loader::loader::Error::Elf(
                linux_loader::loader::elf::Error::InvalidElfMagicNumber,
            ) => BootError::NotAKernel,
            e => BootError::Load(e),
        })?;
    let entry = match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => EntryKind::Pvh(a.0),
        _ => EntryKind::Linux64(r.kernel_load.0),
    };
    Ok(Loaded {
        entry,
        kernel_end: r.kernel_end,
        header: None,
    })
}

fn load_bzimage(mem: &GuestMemoryMmap, file: &mut File) -> Result<Loaded, BootError> {
    let r = BzImage::load(mem, None, file, Some(GuestAddress(HIGH_RAM_START)))
        .map_err(BootError::Load)?;
    let hdr = r.setup_header.ok_or(BootError::NotAKernel)?;
    if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry);
    }
    Ok(Loaded {
        entry: EntryKind::Linux64(r.kernel_load.0 + 0x200),
        kernel_end: r.kernel_end,
        header: Some(hdr),
    })
}

/// The longest command line (without NUL) the kernel accepts.
fn cmdline_max(header: Option<&setup_header>) -> usize {
    match header {
        Some(h) if h.version >= 0x0206 => (h.cmdline_size as usize).min(0xffff),
        Some(_) => 255,
        None => CMDLINE_MAX_ELF - 1,
    }
}

/// Highest address + 1 the initrd may end at.
fn initrd_ceiling(header: Option<&setup_header>, ram_size: u64) -> u64 {
    let low_top = ram_size.min(MMIO_HOLE_START);
    let max = match header {
        Some(h) if h.version >= 0x0203 => u64::from(h.initrd_addr_max) + 1,
        Some(_) => 0x3800_0000,
        None => low_top,
    };
    low_top.min(max)
}

/// Places the initrd as high as possible below `ceiling`, above `kernel_end`.
fn place_initrd(kernel_end: u64, ceiling: u64, size: u64) -> Option<u64> {
    let start = ceiling.checked_sub(size)? & !0xfff;
    let floor = (kernel_end + 0xfff) & !0xfff;
    (start >= floor && start >= HIGH_RAM_START).then_some(start)
}

/// Loads the kernel, initrd and command line and writes the boot
/// parameters; returns how the boot vCPU must enter the kernel.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    spec: BootSpec<'_>,
) -> Result<BootEntry, BootError> {
    let loaded = match sniff(spec.kernel)? {
        Kind::Elf => load_elf(mem, spec.kernel)?,
        Kind::Gzip => {
            let mut f = gunzip(spec.kernel, ram_size)?;
            match sniff(&mut f)? {
                Kind::Elf => load_elf(mem, &mut f)?,
                _ => return Err(BootError::NotAKernel),
            }
        }
        Kind::BzImage => load_bzimage(mem, spec.kernel)?,
    };

    let cmdline = spec.cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let max = cmdline_max(loaded.header.as_ref());
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    mem.write_slice(cmdline, GuestAddress(CMDLINE_START))
        .and_then(|()| mem.write_obj(0u8, GuestAddress(CMDLINE_START + cmdline.len() as u64)))
        .map_err(|_| BootError::Write)?;

    let initrd = match spec.initrd {
        Some(f) => {
            let size = f.metadata().map_err(BootError::ReadInitrd)?.len();
            let ceiling = initrd_ceiling(loaded.header.as_ref(), ram_size);
            let addr = place_initrd(loaded.kernel_end, ceiling, size)
                .ok_or(BootError::InitrdTooBig { size })?;
            f.seek(SeekFrom::Start(0)).map_err(BootError::ReadInitrd)?;
            let len = usize::try_from(size).map_err(|_| BootError::InitrdTooBig { size })?;
            mem.read_exact_volatile_from(GuestAddress(addr), f, len)
                .map_err(|e| BootError::ReadInitrd(std::io::Error::other(e.to_string())))?;
            Some((addr, size))
        }
        None => None,
    };

    write_boot_structures(mem)?;
    match loaded.entry {
        EntryKind::Pvh(entry) => {
            write_start_info(mem, ram_size, cmdline.len(), initrd, spec.rsdp)?;
            Ok(BootEntry::Pvh {
                entry,
                start_info: PVH_INFO_START,
            })
        }
        EntryKind::Linux64(entry) => {
            write_zero_page(
                mem,
                ram_size,
                loaded.header,
                cmdline.len(),
                initrd,
                spec.rsdp,
            )?;
            Ok(BootEntry::Linux64 {
                entry,
                zero_page: ZERO_PAGE_START,
            })
        }
    }
}

/// The zero page for the 64-bit Linux boot protocol.
pub fn zero_page(
    ram_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> boot_params {
    let mut p = boot_params::default();
    match header {
        Some(h) => p.hdr = h,
        None => {
            p.hdr.boot_flag = BOOT_FLAG_MAGIC;
            p.hdr.header = BZ_HDR_MAGIC;
            p.hdr.kernel_alignment = 0x100_0000;
        }
    }
    p.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    p.hdr.cmd_line_ptr = CMDLINE_START as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    p.acpi_rsdp_addr = rsdp.unwrap_or(0);
    let map = e820_map(ram_size);
    for (slot, e) in p.e820_table.iter_mut().zip(map.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = map.len().min(p.e820_table.len()) as u8;
    p
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<(), BootError> {
    let p = zero_page(ram_size, header, cmdline_len, initrd, rsdp);
    let params = BootParams::new(&p, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|_| BootError::Write)
}

/// The PVH start info and its memory map.
pub fn start_info(
    ram_size: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Vec<hvm_modlist_entry>,
) {
    let memmap: Vec<hvm_memmap_table_entry> = e820_map(ram_size)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    (info, memmap, modules)
}

fn write_start_info(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    _cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<(), BootError> {
    let (info, memmap, modules) = start_info(ram_size, initrd, rsdp);
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|_| BootError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;
    use std::io::Write;

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// A minimal ELF64 x86-64 executable: one PT_LOAD at `paddr`, optionally a PVH note.
    fn elf(paddr: u64, pvh_entry: Option<u32>) -> Vec<u8> {
        let code = [0xf4u8; 16];
        let mut note = Vec::new();
        if let Some(e) = pvh_entry {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz "Xen\0"
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&e.to_le_bytes());
        }
        let phnum: u16 = if note.is_empty() { 1 } else { 2 };
        let code_off = 64 + 56 * u64::from(phnum);
        let note_off = code_off + code.len() as u64;
        let mut v = Vec::new();
        v.extend_from_slice(&ELF_MAGIC);
        v.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, LE, version 1
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&paddr.to_le_bytes()); // e_entry
        v.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&64u16.to_le_bytes());
        v.extend_from_slice(&56u16.to_le_bytes());
        v.extend_from_slice(&phnum.to_le_bytes());
        v.extend_from_slice(&64u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        let mut ph = |ty: u32, off: u64, addr: u64, len: u64| {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&5u32.to_le_bytes());
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&addr.to_le_bytes());
            v.extend_from_slice(&addr.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&4u64.to_le_bytes());
        };
        ph(1, code_off, paddr, code.len() as u64);
        if !note.is_empty() {
            ph(4, note_off, 0, note.len() as u64);
        }
        v.extend_from_slice(&code);
        v.extend_from_slice(&note);
        v
    }

    fn ram() -> GuestRam {
        GuestRam::new(64 << 20).unwrap()
    }

    #[test]
    fn elf_without_note_gets_a_zero_page_and_64bit_entry() {
        let ram = ram();
        let mut k = file(&elf(0x20_0000, None));
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: None,
                cmdline: "console=ttyS0",
                rsdp: Some(0xe0000),
            },
        )
        .unwrap();
        assert_eq!(
            e,
            BootEntry::Linux64 {
                entry: 0x20_0000,
                zero_page: ZERO_PAGE_START
            }
        );
        let p: boot_params = ram
            .memory()
            .read_obj(GuestAddress(ZERO_PAGE_START))
            .unwrap();
        assert_eq!({ p.hdr.header }, BZ_HDR_MAGIC);
        let ptr = p.hdr.cmd_line_ptr;
        assert_eq!(u64::from(ptr), CMDLINE_START);
        assert_eq!({ p.hdr.cmdline_size }, 13);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 3);
        let mut buf = [0u8; 14];
        ram.memory()
            .read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let code: u8 = ram.memory().read_obj(GuestAddress(0x20_0000)).unwrap();
        assert_eq!(code, 0xf4);
        // Identity map: PML4 -> PDPT, last PD entry maps 4 GiB - 2 MiB.
        let pml4: u64 = ram.memory().read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPT_START | 3);
        let last: u64 = ram
            .memory()
            .read_obj(GuestAddress(PD_START + 4 * 0x1000 - 8))
            .unwrap();
        assert_eq!(last, (FOUR_GIB_MINUS_2M) | 0x83);
    }
    const FOUR_GIB_MINUS_2M: u64 = (1 << 32) - (2 << 20);

    #[test]
    fn elf_with_pvh_note_gets_start_info_with_memmap_and_initrd() {
        let ram = ram();
        let mut k = file(&elf(0x20_0000, Some(0x20_0004)));
        let mut initrd = file(&[0xab; 5000]);
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: Some(&mut initrd),
                cmdline: "",
                rsdp: None,
            },
        )
        .unwrap();
        assert_eq!(
            e,
            BootEntry::Pvh {
                entry: 0x20_0004,
                start_info: PVH_INFO_START
            }
        );
        let si: hvm_start_info = ram.memory().read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(si.magic, XEN_HVM_START_MAGIC);
        assert_eq!(si.memmap_entries, 3);
        assert_eq!(si.nr_modules, 1);
        let m: hvm_modlist_entry = ram
            .memory()
            .read_obj(GuestAddress(si.modlist_paddr))
            .unwrap();
        assert_eq!(m.size, 5000);
        assert_eq!(m.paddr % 4096, 0);
        assert!(m.paddr + m.size <= 64 << 20);
        let b: u8 = ram.memory().read_obj(GuestAddress(m.paddr + 4999)).unwrap();
        assert_eq!(b, 0xab);
        let mm: hvm_memmap_table_entry = ram
            .memory()
            .read_obj(GuestAddress(si.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!(
            (mm.addr, mm.addr + mm.size, mm.type_),
            (HIGH_RAM_START, 64 << 20, 1)
        );
    }

    /// A minimal bzImage: 4 setup sectors with a 2.15 header, then `payload`.
    fn bzimage(xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 5 * 512];
        v[0x1f1] = 4; // setup_sects
        v[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        v[0x202..0x206].copy_from_slice(&BZ_HDR_MAGIC.to_le_bytes());
        v[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version
        v[0x211] = 1; // loadflags: LOADED_HIGH
        v[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        v[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
        v[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        v[0x238..0x23c].copy_from_slice(&100u32.to_le_bytes()); // cmdline_size
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn bzimage_enters_at_the_64bit_entry_with_its_own_header_limits() {
        let ram = ram();
        let mut k = file(&bzimage(XLF_KERNEL_64, &[0x90; 1024]));
        let mut initrd = file(&[7; 3000]);
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: Some(&mut initrd),
                cmdline: "quiet",
                rsdp: None,
            },
        )
        .unwrap();
        assert_eq!(
            e,
            BootEntry::Linux64 {
                entry: 0x10_0200,
                zero_page: ZERO_PAGE_START
            }
        );
        let b: u8 = ram.memory().read_obj(GuestAddress(0x10_0000)).unwrap();
        assert_eq!(b, 0x90, "payload after the setup sectors loads at 1 MiB");
        let p: boot_params = ram
            .memory()
            .read_obj(GuestAddress(ZERO_PAGE_START))
            .unwrap();
        let (version, loader, size, image) = (
            p.hdr.version,
            p.hdr.type_of_loader,
            p.hdr.ramdisk_size,
            p.hdr.ramdisk_image,
        );
        assert_eq!((version, loader, size), (0x020f, 0xff, 3000));
        assert!(image >= 0x10_0000 + 1024 && u64::from(image) + 3000 <= 64 << 20);

        // The header's cmdline_size (100) is the limit, not 2048.
        let mut k = file(&bzimage(XLF_KERNEL_64, &[0x90; 16]));
        let long = "y".repeat(101);
        let err = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: None,
                cmdline: &long,
                rsdp: None,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel command line too long (101 bytes, at most 100)"
        );
    }

    #[test]
    fn bzimage_without_64bit_entry_is_refused() {
        let ram = ram();
        let mut k = file(&bzimage(0, &[0x90; 16]));
        let err = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: None,
                cmdline: "",
                rsdp: None,
            },
        )
        .unwrap_err();
        assert!(matches!(err, BootError::No64BitEntry));
    }

    #[test]
    fn gzipped_elf_is_accepted() {
        let ram = ram();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf(0x30_0000, None)).unwrap();
        let mut k = file(&gz.finish().unwrap());
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: None,
                cmdline: "",
                rsdp: None,
            },
        )
        .unwrap();
        assert!(matches!(
            e,
            BootEntry::Linux64 {
                entry: 0x30_0000,
                ..
            }
        ));
    }

    #[test]
    fn bad_inputs_give_clear_errors() {
        let ram = ram();
        let mut junk = file(b"#!/bin/sh\necho not a kernel\n");
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut junk,
                initrd: None,
                cmdline: "",
                rsdp: None,
            },
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "not a kernel (neither a bzImage nor an ELF or gzip'd ELF image)"
        );

        let long = "x".repeat(3000);
        let mut k = file(&elf(0x20_0000, None));
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: None,
                cmdline: &long,
                rsdp: None,
            },
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "kernel command line too long (3000 bytes, at most 2047)"
        );

        let mut big = tempfile::tempfile().unwrap();
        big.set_len(128 << 20).unwrap();
        let e = load(
            ram.memory(),
            ram.size(),
            BootSpec {
                kernel: &mut k,
                initrd: Some(&mut big),
                cmdline: "",
                rsdp: None,
            },
        );
        assert!(matches!(e, Err(BootError::InitrdTooBig { size }) if size == 128 << 20));
    }

    #[test]
    fn initrd_placement_respects_kernel_and_ceiling() {
        assert_eq!(place_initrd(0x40_0000, 0x100_0000, 0x1000), Some(0xfff000));
        assert_eq!(place_initrd(0x40_0000, 0x100_0000, 0x1001), Some(0xffe000));
        assert_eq!(place_initrd(0xf0_0000, 0x100_0000, 0x20_0000), None);
        assert_eq!(place_initrd(0, 0x1000, 0x2000), None);
    }

    #[test]
    fn segments_decode_the_gdt() {
        let cs = segment(SEL_CODE64);
        assert_eq!(
            (cs.l, cs.db, cs.type_, cs.limit, cs.present),
            (1, 0, 0xb, 0xffff_ffff, 1)
        );
        let cs32 = segment(SEL_CODE32);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let tss = segment(SEL_TSS);
        assert_eq!((tss.type_, tss.s), (0xb, 0));
    }
}
