//! The PIIX/ICH reset control register at port 0xcf9 (no vmd counterpart;
//! the FADT's reset register points here).
//!
//! Port: [`RESET_PORT`] (0xcf9), length [`RESET_PORT_LEN`] (1), byte
//! accesses only. No IRQ. A write with bit 2 (`RST_CPU`) set calls
//! [`PowerEvents::reset`]; Linux writes 0x02 then 0x06, the ACPI reset
//! register value is [`RESET_VALUE`] (0x06). Reads return the last value
//! written, bits 1 and 3 only.
//!
//! Construction: [`ResetControl::new`] with the VM's [`PowerEvents`].
//!
//! Sharing with PCI: port 0xcf9 lies inside the config-address register of
//! PCI configuration mechanism #1 (0xcf8-0xcfb). A PCI host bridge inserted
//! on the I/O bus at 0xcf8 must hand 1-byte accesses at 0xcf9 to this device
//! (see [`is_reset_access`]) and keep the dword accesses for itself, as the
//! chipsets do.

use std::sync::Arc;

use crate::bus::{BusDevice, PowerEvents};

/// The reset control port.
pub const RESET_PORT: u64 = 0xcf9;
/// Ports the reset control register decodes.
pub const RESET_PORT_LEN: u64 = 1;
/// The value the FADT tells the OS to write: full reset, CPU reset.
pub const RESET_VALUE: u8 = 0x06;

/// `SYS_RST` (bit 1) and `FULL_RST` (bit 3) are plain storage.
const STORED_BITS: u8 = 0x0a;
/// `RST_CPU`: writing it set resets the machine.
const RST_CPU: u8 = 0x04;

/// Whether an I/O access at `port` of `len` bytes is meant for the reset
/// control register rather than for the PCI config-address register.
pub fn is_reset_access(port: u64, len: usize) -> bool {
    port == RESET_PORT && len == 1
}

/// The reset control register.
pub struct ResetControl {
    power: Arc<dyn PowerEvents>,
    value: u8,
}

impl ResetControl {
    /// A register whose reset bit asks `power` for a reset.
    pub fn new(power: Arc<dyn PowerEvents>) -> Self {
        ResetControl { power, value: 0 }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, [b]) = (offset, data) {
            *b = self.value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, &[v]) = (offset, data) {
            self.value = v & STORED_BITS;
            if v & RST_CPU != 0 {
                tracing::debug!("reset through port 0xcf9 ({v:#04x})");
                self.power.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Power(AtomicU32);
    impl PowerEvents for Power {
        fn power_off(&self) {}
        fn reset(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn rst_cpu_bit_resets_and_other_bits_are_stored() {
        let p = Arc::new(Power::default());
        let mut r = ResetControl::new(p.clone());
        r.write(0, &[0x02]);
        assert_eq!(p.0.load(Ordering::SeqCst), 0);
        let mut b = [0u8];
        r.read(0, &mut b);
        assert_eq!(b[0], 0x02);
        r.write(0, &[RESET_VALUE]);
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wide_or_misplaced_accesses_do_nothing() {
        let p = Arc::new(Power::default());
        let mut r = ResetControl::new(p.clone());
        r.write(0, &[0x06, 0x00, 0x00, 0x80]);
        r.write(1, &[0x06]);
        let mut four = [0u8; 4];
        r.read(0, &mut four);
        assert_eq!(four, [0xff; 4]);
        assert_eq!(p.0.load(Ordering::SeqCst), 0);
        assert!(is_reset_access(0xcf9, 1));
        assert!(!is_reset_access(0xcf8, 4));
        assert!(!is_reset_access(0xcf9, 2));
    }
}
