//! The I/O and MMIO buses: address ranges mapped to devices.
//!
//! A VM has two buses, one for port I/O and one for MMIO. The vCPU exit
//! handler calls [`Bus::read`] / [`Bus::write`]; accesses that hit no device
//! are counted and answered with all-ones on read, never fatal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device that answers accesses on a bus.
///
/// `offset` is relative to the base of the range the device was inserted
/// at; `data.len()` is the access size (1, 2, 4 or 8, guest controlled: a
/// device must accept any length and ignore what it does not understand).
pub trait BusDevice: Send {
    /// Fills `data` for a read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A level- or edge-triggered interrupt line a device can raise.
///
/// Implemented by `vstate` (irqfd / `KVM_IRQ_LINE`); devices only see this.
/// Devices call it with themselves locked, from vCPU threads or their own
/// timer thread, so it must not block or touch a device.
pub trait Interrupt: Send + Sync {
    /// Signals the interrupt (an edge; for level lines, assert then deassert).
    fn trigger(&self);

    /// Drives a level-triggered line (the ACPI SCI): `true` while the
    /// device's condition holds, `false` once it is cleared. Devices call it
    /// on every change of the condition, possibly repeating a level.
    ///
    /// The default pulses the line when asked to assert it, which is right
    /// for implementations that only have edges; a runtime with
    /// `KVM_IRQ_LINE` should override it to hold the level.
    fn set_level(&self, high: bool) {
        if high {
            self.trigger();
        }
    }
}

/// Requests a device makes of the whole VM: ACPI S5 (power off) and the
/// reset lines (i8042 pulse, 0xcf9, the FADT reset register).
///
/// Implemented by the VM runtime, which stops all vCPUs and ends the VM with
/// the matching outcome. The methods are called on the vCPU thread that
/// made the access, with the requesting device locked: they must only
/// record the request and kick the vCPUs, never wait for them or touch a
/// device.
pub trait PowerEvents: Send + Sync {
    /// The guest asked to power off.
    fn power_off(&self);
    /// The guest asked to reset (reboot).
    fn reset(&self);
}

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    /// A range of length zero.
    #[error("bus range at {0:#x} has zero length")]
    ZeroLength(u64),
}

/// A shared handle to a device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Range {
    len: u64,
    device: SharedDevice,
}

/// Address ranges → devices. Cheap to clone (one clone per vCPU thread).
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
    unhandled: Arc<AtomicU64>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength(base));
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        // The closest range starting at or below the last byte must end before `base`.
        if let Some((&b, r)) = self.ranges.range(..end).next_back() {
            if b + r.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Range)> {
        let (&base, range) = self.ranges.range(..=addr).next_back()?;
        let off = addr - base;
        // The whole access must lie inside the range.
        if off.checked_add(size as u64)? <= range.len {
            Some((off, range))
        } else {
            None
        }
    }

    /// Dispatches a read; returns false (and fills all-ones) if no device
    /// claims the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, r)) => {
                r.device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                self.note_unhandled("read", addr, data.len());
                false
            }
        }
    }

    /// Dispatches a write; returns false if no device claims the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, r)) => {
                r.device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(off, data);
                true
            }
            None => {
                self.note_unhandled("write", addr, data.len());
                false
            }
        }
    }

    /// Number of accesses no device claimed so far.
    pub fn unhandled(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }

    fn note_unhandled(&self, what: &str, addr: u64, len: usize) {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("unhandled {what} of {len} bytes at {addr:#x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<u8>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.0.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = self.0.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
        }
    }

    fn dev(n: usize) -> SharedDevice {
        Arc::new(Mutex::new(Echo(vec![0; n])))
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::new();
        bus.insert(dev(8), 0x3f8, 8).unwrap();
        assert_eq!(
            bus.insert(dev(8), 0x3fc, 8),
            Err(BusError::Overlap {
                base: 0x3fc,
                len: 8
            })
        );
        assert_eq!(
            bus.insert(dev(8), 0x3f0, 9),
            Err(BusError::Overlap {
                base: 0x3f0,
                len: 9
            })
        );
        bus.insert(dev(8), 0x3f0, 8).unwrap();
        bus.insert(dev(8), 0x400, 8).unwrap();
        assert_eq!(bus.insert(dev(1), 0x10, 0), Err(BusError::ZeroLength(0x10)));
        assert!(bus.insert(dev(1), u64::MAX, 2).is_err());
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let mut bus = Bus::new();
        bus.insert(dev(8), 0x70, 8).unwrap();
        assert!(bus.write(0x72, &[0xab, 0xcd]));
        let mut buf = [0u8; 2];
        assert!(bus.read(0x72, &mut buf));
        assert_eq!(buf, [0xab, 0xcd]);
    }

    #[test]
    fn unclaimed_and_straddling_accesses_read_all_ones_and_are_counted() {
        let mut bus = Bus::new();
        bus.insert(dev(8), 0x70, 8).unwrap();
        let mut buf = [0u8; 4];
        assert!(!bus.read(0x10, &mut buf));
        assert_eq!(buf, [0xff; 4]);
        // Starts inside the range but runs past its end.
        assert!(!bus.read(0x76, &mut buf));
        assert!(!bus.write(0x77, &[1, 2]));
        assert_eq!(bus.unhandled(), 3);
    }
}
