//! The i8042 keyboard controller, as far as the reset line goes (vmd has no
//! i8042; Linux and SeaBIOS use it to reboot).
//!
//! Ports: data at [`I8042_PORT`] (0x60) and status/command at 0x64, so the
//! device is inserted at 0x60 with length [`I8042_PORT_LEN`] (5). Ports
//! 0x61-0x63 are not decoded (reads 0xff, writes ignored); with an in-kernel
//! PIT, KVM answers 0x61 itself. No IRQ: no keyboard or mouse is attached,
//! and the FADT does not announce an 8042 (see [`crate::acpi`]), so Linux's
//! i8042 driver never probes it; its reboot code still uses the reset line.
//!
//! Construction: [`I8042::new`] with the VM's [`PowerEvents`].
//!
//! Behaviour: command 0xfe (pulse the reset line) and a write of the output
//! port (command 0xd1) with bit 0 clear call [`PowerEvents::reset`]. The
//! controller commands firmware uses to find the chip are answered: read
//! and write of the command byte (0x20/0x60), self test (0xaa → 0x55),
//! port tests (0xa9/0xab → 0), read output port (0xd0), enable and disable
//! of both ports. The status register reports "system flag" and whether a
//! reply byte waits in the output buffer; port 0x60 reads 0 when it is
//! empty.

use std::sync::Arc;

use crate::bus::{BusDevice, PowerEvents};

/// The data port; the status/command port is at +4.
pub const I8042_PORT: u64 = 0x60;
/// Ports from the data port through the command port.
pub const I8042_PORT_LEN: u64 = 5;

const DATA: u64 = 0;
const CMD: u64 = 4;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
/// The last write went to the command port.
const STATUS_CMD: u8 = 0x08;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_RESET: u8 = 0xfe;

/// Command byte bits: system flag, keyboard and aux ports disabled.
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;

/// Output port bits: bit 0 high keeps the CPU out of reset, bit 1 is A20.
const OUTPORT_RESET_N: u8 = 0x01;
const OUTPORT_DEFAULT: u8 = 0x03;

/// A data-port write that completes a two-byte command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCtr,
    WriteOutport,
}

/// The keyboard controller.
pub struct I8042 {
    power: Arc<dyn PowerEvents>,
    ctr: u8,
    outport: u8,
    /// The reply waiting in the output buffer.
    out: Option<u8>,
    pending: Pending,
    last_was_cmd: bool,
}

impl I8042 {
    /// A controller whose reset line asks `power` for a reset.
    pub fn new(power: Arc<dyn PowerEvents>) -> Self {
        I8042 {
            power,
            ctr: CTR_SYS | CTR_KBD_DISABLED | CTR_AUX_DISABLED,
            outport: OUTPORT_DEFAULT,
            out: None,
            pending: Pending::None,
            last_was_cmd: false,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYS;
        if self.out.is_some() {
            s |= STATUS_OBF;
        }
        if self.last_was_cmd {
            s |= STATUS_CMD;
        }
        s
    }

    fn reply(&mut self, v: u8) {
        self.out = Some(v);
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_cmd = true;
        self.pending = Pending::None;
        match cmd {
            CMD_READ_CTR => self.reply(self.ctr),
            CMD_WRITE_CTR => self.pending = Pending::WriteCtr,
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLED,
            CMD_TEST_AUX | CMD_TEST_KBD => self.reply(0x00),
            CMD_SELF_TEST => self.reply(0x55),
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLED,
            CMD_READ_OUTPORT => self.reply(self.outport),
            CMD_WRITE_OUTPORT => self.pending = Pending::WriteOutport,
            CMD_RESET => {
                tracing::debug!("i8042: reset line pulsed");
                self.power.reset();
            }
            // Pulse-output commands other than reset, and the rest: no effect.
            _ => tracing::trace!("i8042: ignored command {cmd:#x}"),
        }
    }

    fn data(&mut self, v: u8) {
        self.last_was_cmd = false;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::WriteCtr => self.ctr = v,
            Pending::WriteOutport => {
                self.outport = v;
                if v & OUTPORT_RESET_N == 0 {
                    tracing::debug!("i8042: reset through the output port");
                    self.power.reset();
                }
            }
            // A byte for the keyboard, which is absent.
            Pending::None => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match (offset, data.len()) {
            (DATA, 1) => self.out.take().unwrap_or(0),
            (CMD, 1) => self.status(),
            _ => 0xff,
        };
        data.fill(0xff);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (DATA, &[v]) => self.data(v),
            (CMD, &[v]) => self.command(v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Power {
        resets: AtomicU32,
        offs: AtomicU32,
    }
    impl PowerEvents for Power {
        fn power_off(&self) {
            self.offs.fetch_add(1, Ordering::SeqCst);
        }
        fn reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn kbc() -> (I8042, Arc<Power>) {
        let p = Arc::new(Power::default());
        (I8042::new(p.clone()), p)
    }

    fn rd(k: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        k.read(off, &mut b);
        b[0]
    }

    #[test]
    fn command_0xfe_resets_the_vm() {
        let (mut k, p) = kbc();
        k.write(CMD, &[CMD_RESET]);
        assert_eq!(p.resets.load(Ordering::SeqCst), 1);
        assert_eq!(p.offs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn output_port_write_with_bit0_clear_resets() {
        let (mut k, p) = kbc();
        k.write(CMD, &[CMD_WRITE_OUTPORT]);
        k.write(DATA, &[OUTPORT_DEFAULT]);
        assert_eq!(p.resets.load(Ordering::SeqCst), 0);
        k.write(CMD, &[CMD_READ_OUTPORT]);
        assert_eq!(rd(&mut k, DATA), OUTPORT_DEFAULT);
        k.write(CMD, &[CMD_WRITE_OUTPORT]);
        k.write(DATA, &[0x02]);
        assert_eq!(p.resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn idle_status_has_no_data_and_data_port_reads_zero() {
        let (mut k, p) = kbc();
        assert_eq!(rd(&mut k, CMD) & STATUS_OBF, 0);
        assert_eq!(rd(&mut k, DATA), 0);
        // A keyboard byte with no keyboard does nothing.
        k.write(DATA, &[0xff]);
        assert_eq!(rd(&mut k, CMD) & STATUS_OBF, 0);
        assert_eq!(p.resets.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn self_test_and_command_byte_round_trip() {
        let (mut k, _) = kbc();
        k.write(CMD, &[CMD_SELF_TEST]);
        assert_eq!(
            rd(&mut k, CMD) & (STATUS_OBF | STATUS_CMD),
            STATUS_OBF | STATUS_CMD
        );
        assert_eq!(rd(&mut k, DATA), 0x55);
        assert_eq!(rd(&mut k, CMD) & STATUS_OBF, 0);
        k.write(CMD, &[CMD_WRITE_CTR]);
        k.write(DATA, &[0x45]);
        k.write(CMD, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut k, DATA), 0x45);
        k.write(CMD, &[CMD_ENABLE_AUX]);
        k.write(CMD, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut k, DATA), 0x45 & !CTR_AUX_DISABLED);
    }

    #[test]
    fn other_ports_and_sizes_are_ignored() {
        let (mut k, p) = kbc();
        let mut two = [0u8; 2];
        k.read(CMD, &mut two);
        assert_eq!(two, [0xff, 0xff]);
        assert_eq!(rd(&mut k, 1), 0xff);
        k.write(CMD, &[CMD_RESET, CMD_RESET]);
        k.write(2, &[CMD_RESET]);
        k.write(u64::MAX, &[CMD_RESET]);
        assert_eq!(p.resets.load(Ordering::SeqCst), 0);
    }
}
