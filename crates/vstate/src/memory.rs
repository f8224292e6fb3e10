//! Guest RAM: a sealed memfd mapped with `vm-memory`, the physical layout
//! and its E820 map (vmd's `create_memory_map` and `alloc_guest_mem` in
//! `x86_vm.c`).
//!
//! Layout (guest physical):
//!
//! | range                  | what                                        |
//! |------------------------|---------------------------------------------|
//! | 0 .. 640 KiB           | RAM (boot structures live here)             |
//! | 640 KiB .. 1 MiB       | reserved in E820 (ACPI tables at 0xe0000)   |
//! | 1 MiB .. 3 GiB         | RAM (kernel, initrd)                        |
//! | 3 GiB .. 4 GiB         | PCI/MMIO hole (LAPIC, IOAPIC, future BARs)  |
//! | 4 GiB ..               | the rest of RAM for guests above 3 GiB      |
//!
//! The memslot below 3 GiB covers 0..640 KiB..1 MiB contiguously; the
//! 640 KiB..1 MiB part is RAM for KVM but reserved for the guest, so the
//! VMM can place firmware tables there.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

/// Top of conventional (low) RAM: 640 KiB.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Start of the BIOS area where the ACPI tables go (reserved in E820).
pub const BIOS_AREA_START: u64 = 0xe_0000;
/// Start of high memory: 1 MiB.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the PCI/MMIO hole below 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// 4 GiB: RAM above the hole starts here.
pub const FOUR_GIB: u64 = 1 << 32;
/// Smallest guest we accept.
pub const MIN_MEMORY: u64 = 32 << 20;
/// Largest guest we accept (a sanity bound; the host usually limits first).
pub const MAX_MEMORY: u64 = 1 << 40;

/// E820 entry type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 entry type: reserved.
pub const E820_RESERVED: u32 = 2;

/// Errors from creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is below the minimum or not a whole number of pages.
    #[error("guest memory size {0} bytes is not supported (at least 32 MiB, a multiple of 4 KiB)")]
    BadSize(u64),
    /// The host cannot provide that much memory (or memfd/mmap failed).
    #[error("could not allocate guest memory")]
    Allocate(#[source] std::io::Error),
    /// vm-memory refused the regions.
    #[error("could not allocate guest memory")]
    Regions(String),
}

/// One contiguous piece of guest RAM: guest address, size, memfd offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// Guest physical start.
    pub guest: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset of the piece in the backing memfd.
    pub file_offset: u64,
}

/// One E820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The RAM pieces for a guest of `size` bytes: below the MMIO hole, then
/// above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<RamRange> {
    let low = size.min(MMIO_HOLE_START);
    let mut v = vec![RamRange {
        guest: 0,
        size: low,
        file_offset: 0,
    }];
    if size > low {
        v.push(RamRange {
            guest: FOUR_GIB,
            size: size - low,
            file_offset: low,
        });
    }
    v
}

/// The E820 map the guest sees for `size` bytes of RAM.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let low_top = size.min(MMIO_HOLE_START);
    let mut v = vec![
        E820Entry {
            addr: 0,
            size: LOW_RAM_END,
            kind: E820_RAM,
        },
        E820Entry {
            addr: BIOS_AREA_START,
            size: HIGH_RAM_START - BIOS_AREA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: HIGH_RAM_START,
            size: low_top - HIGH_RAM_START,
            kind: E820_RAM,
        },
    ];
    if size > low_top {
        v.push(E820Entry {
            addr: FOUR_GIB,
            size: size - low_top,
            kind: E820_RAM,
        });
    }
    v
}

/// Guest RAM: the memfd and its mapping.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    memfd: File,
    size: u64,
}

impl GuestRam {
    /// Creates `size` bytes of guest RAM, backed by a memfd whose size is
    /// sealed, mapped shared and without reserve (pages are touched lazily).
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        if size < MIN_MEMORY || size % 4096 != 0 {
            return Err(MemoryError::BadSize(size));
        }
        if size > MAX_MEMORY {
            return Err(MemoryError::Allocate(std::io::Error::from_raw_os_error(
                libc::ENOMEM,
            )));
        }
        check_host_can_provide(size)?;
        let memfd = create_memfd(size).map_err(MemoryError::Allocate)?;
        let mut regions = Vec::new();
        for r in ram_ranges(size) {
            let len = usize::try_from(r.size)
                .map_err(|_| MemoryError::Regions("size does not fit usize".into()))?;
            let fo = FileOffset::new(
                memfd.try_clone().map_err(MemoryError::Allocate)?,
                r.file_offset,
            );
            let mapping = MmapRegion::build(
                Some(fo),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
            )
            .map_err(|e| MemoryError::Regions(e.to_string()))?;
            let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest))
                .ok_or_else(|| MemoryError::Regions("region wraps".into()))?;
            regions.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(regions)
            .map_err(|e| MemoryError::Regions(e.to_string()))?;
        advise_huge_pages(&memory);
        Ok(Self {
            memory,
            memfd,
            size,
        })
    }

    /// The mapped memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The backing memfd (for device processes, snapshots, migration).
    pub fn memfd(&self) -> &File {
        &self.memfd
    }

    /// Total RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Asks for transparent huge pages on guest RAM. Populating guest memory
/// 4 KiB at a time is the largest cost of a boot on slow hosts (measured
/// in the nested bench: 1.8-4 s to load a 45 MiB vmlinux in L1); with
/// huge pages it is one fault per 2 MiB. For a memfd the kernel honours
/// this only when `/sys/kernel/mm/transparent_hugepage/shmem_enabled` is
/// `advise` (or `always`/`within_size`); otherwise it is a no-op.
fn advise_huge_pages(memory: &GuestMemoryMmap) {
    for region in memory.iter() {
        // SAFETY: the range is exactly one live mapping owned by `memory`;
        // MADV_HUGEPAGE changes no contents.
        let r = unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        if r != 0 {
            tracing::debug!(
                "MADV_HUGEPAGE on guest memory: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Refuses sizes above the host's RAM plus swap: the memfd and mapping
/// would succeed lazily and the guest would be killed later instead.
fn check_host_can_provide(size: u64) -> Result<(), MemoryError> {
    // SAFETY: sysinfo only writes into the zeroed struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return Err(MemoryError::Allocate(std::io::Error::last_os_error()));
    }
    let unit = u64::from(info.mem_unit.max(1));
    let host = (info.totalram as u64)
        .saturating_add(info.totalswap as u64)
        .saturating_mul(unit);
    if size > host {
        return Err(MemoryError::Allocate(std::io::Error::from_raw_os_error(
            libc::ENOMEM,
        )));
    }
    Ok(())
}

fn create_memfd(size: u64) -> std::io::Result<File> {
    let name = c"vmd-guest-ram";
    // SAFETY: `name` is a valid NUL-terminated string; the flags are valid.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a memfd we own, with a valid seal mask.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest_is_one_range_and_e820_has_the_low_holes() {
        let size = 256 << 20;
        assert_eq!(
            ram_ranges(size),
            vec![RamRange {
                guest: 0,
                size,
                file_offset: 0
            }]
        );
        let map = e820_map(size);
        assert_eq!(map.len(), 3);
        assert_eq!(
            (map[0].addr, map[0].size, map[0].kind),
            (0, 0xa0000, E820_RAM)
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[1].addr + map[1].size, HIGH_RAM_START);
        assert_eq!(
            (map[2].addr, map[2].addr + map[2].size),
            (HIGH_RAM_START, size)
        );
    }

    #[test]
    fn big_guest_is_split_around_the_mmio_hole() {
        let size = 6u64 << 30;
        let r = ram_ranges(size);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].size, MMIO_HOLE_START);
        assert_eq!(
            (r[1].guest, r[1].size, r[1].file_offset),
            (FOUR_GIB, 3 << 30, MMIO_HOLE_START)
        );
        let map = e820_map(size);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // All RAM except the 640K..1M window is usable.
        assert_eq!(ram, size - (HIGH_RAM_START - LOW_RAM_END));
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_HOLE_START || e.addr >= FOUR_GIB));
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(matches!(
            GuestRam::new(1 << 20),
            Err(MemoryError::BadSize(_))
        ));
        assert!(matches!(
            GuestRam::new((64 << 20) + 1),
            Err(MemoryError::BadSize(_))
        ));
        let e = GuestRam::new(MAX_MEMORY).err().unwrap();
        assert_eq!(e.to_string(), "could not allocate guest memory");
    }

    #[test]
    fn memory_is_backed_by_a_sealed_memfd() {
        let ram = GuestRam::new(64 << 20).unwrap();
        ram.memory()
            .write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .unwrap();
        let v: u32 = ram.memory().read_obj(GuestAddress(0x1000)).unwrap();
        assert_eq!(v, 0xdead_beef);
        assert_eq!(ram.memory().last_addr(), GuestAddress((64 << 20) - 1));
        assert!(
            ram.memfd().set_len(128 << 20).is_err(),
            "size must be sealed"
        );
        assert_eq!(ram.memfd().metadata().unwrap().len(), 64 << 20);
    }
}
