//! The POST-code port 0x80 and the other ports guests touch without a device
//! behind them (vmd's I/O exit handler answers unmapped ports with
//! all-ones, as [`Probe`] does).
//!
//! [`PostCode`] sits at [`POST_PORT`] (0x80), length 1: it records the last
//! byte written (firmware progress codes, Linux's `outb_p` delay writes) and
//! reads it back. [`Probe`] answers a port range with all-ones on read and
//! ignores writes, like an empty ISA slot, but without counting the access
//! as unhandled or logging it: the runtime inserts one per entry of
//! [`QUIET_PORTS`]. Neither raises an interrupt.
//!
//! Construction: [`PostCode::new`], [`Probe::new`]; both are plain
//! [`BusDevice`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bus::BusDevice;

/// The POST diagnostic port.
pub const POST_PORT: u64 = 0x80;

/// Port ranges (base, length) a Linux guest or SeaBIOS probes or pokes on a
/// PC that has nothing there for us; answered by a [`Probe`].
pub const QUIET_PORTS: &[(u64, u64)] = &[
    // Alternative I/O delay port (`io_delay=0xed`).
    (0xed, 1),
    // COM2-COM4: the 8250 driver probes the legacy serial ports.
    (0x2f8, 8),
    (0x3e8, 8),
    (0x2e8, 8),
    // LPT1-LPT3, probed by parport_pc.
    (0x378, 8),
    (0x278, 8),
    (0x3bc, 4),
    // Floppy controller.
    (0x3f0, 6),
    // DMA controllers and page registers around port 0x80.
    (0x00, 0x20),
    (0x81, 0x0f),
    (0xc0, 0x20),
    // VGA registers (vgacon, SeaBIOS without a VGA ROM).
    (0x3c0, 0x20),
    // The math coprocessor error port.
    (0xf0, 0x10),
];

/// The POST-code port: remembers the last value written.
#[derive(Debug, Default)]
pub struct PostCode {
    last: u8,
    writes: u64,
}

impl PostCode {
    /// A POST port that has seen nothing yet (reads 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The last byte the guest wrote.
    pub fn last(&self) -> u8 {
        self.last
    }

    /// How many writes the guest made.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl BusDevice for PostCode {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = self.last;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A wider write puts its low byte on the port.
        if let (0, Some(&b)) = (offset, data.first()) {
            if b != self.last {
                tracing::trace!("POST code {b:#04x}");
            }
            self.last = b;
            self.writes += 1;
        }
    }
}

/// An empty decode range: reads all-ones, ignores writes, counts accesses.
#[derive(Debug, Default)]
pub struct Probe {
    accesses: Arc<AtomicU64>,
}

impl Probe {
    /// An empty range.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter of the accesses this range answered, shared with the caller.
    pub fn accesses(&self) -> Arc<AtomicU64> {
        self.accesses.clone()
    }
}

impl BusDevice for Probe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use std::sync::Mutex;

    #[test]
    fn post_code_records_the_last_write() {
        let mut p = PostCode::new();
        let mut b = [0u8];
        p.read(0, &mut b);
        assert_eq!(b[0], 0);
        p.write(0, &[0x12]);
        p.write(0, &[0x34, 0x56]);
        assert_eq!(p.last(), 0x34);
        assert_eq!(p.writes(), 2);
        p.read(0, &mut b);
        assert_eq!(b[0], 0x34);
        let mut two = [0u8; 2];
        p.read(0, &mut two);
        assert_eq!(two, [0x34, 0xff]);
        // Offsets past the port are ignored.
        p.write(7, &[0x99]);
        p.write(0, &[]);
        assert_eq!(p.last(), 0x34);
    }

    #[test]
    fn probe_reads_all_ones_and_is_not_unhandled() {
        let mut bus = Bus::new();
        let probe = Probe::new();
        let count = probe.accesses();
        bus.insert(Arc::new(Mutex::new(probe)), 0x2f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x2f9, &mut b));
        assert_eq!(b, [0xff]);
        assert!(bus.write(0x2f8, &[0x41]));
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert_eq!(bus.unhandled(), 0);
    }

    #[test]
    fn quiet_ports_fit_on_one_bus_with_the_platform_devices() {
        let mut bus = Bus::new();
        for &(base, len) in QUIET_PORTS {
            bus.insert(Arc::new(Mutex::new(Probe::new())), base, len)
                .unwrap();
        }
        let platform = [
            (POST_PORT, 1),
            (crate::serial::COM1_PORT, crate::serial::SERIAL_PORT_LEN),
            (crate::rtc::RTC_PORT, crate::rtc::RTC_PORT_LEN),
            (crate::i8042::I8042_PORT, crate::i8042::I8042_PORT_LEN),
        ];
        for (base, len) in platform {
            bus.insert(Arc::new(Mutex::new(Probe::new())), base, len)
                .unwrap();
        }
    }
}
