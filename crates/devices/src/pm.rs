//! ACPI fixed-hardware power management registers: PM1a event and control
//! blocks and the PM timer (no vmd counterpart: vmd's guests shut down
//! through vmmci; ours use ACPI, which the FADT in [`crate::acpi`] points
//! at these ports).
//!
//! Ports, all in one device at [`PM_PORT`] (0x600), length [`PM_PORT_LEN`]
//! (12):
//!
//! | port  | register | width |
//! |-------|----------|-------|
//! | 0x600 | PM1a_STS: `PWRBTN_STS` (bit 8), `WAK_STS` (bit 15); write 1 to clear | 16 |
//! | 0x602 | PM1a_EN: `PWRBTN_EN` (bit 8) and the other enables, plain storage | 16 |
//! | 0x604 | PM1a_CNT: `SCI_EN` (bit 0, set from reset: the FADT has no SMI_CMD, so the machine is always in ACPI mode), `SLP_TYP` (bits 10-12), `SLP_EN` (bit 13, write-only) | 16 |
//! | 0x608 | PM_TMR: 32-bit free-running counter at 3.579545 MHz (FADT `TMR_VAL_EXT`), read-only | 32 |
//!
//! Any access width at any offset inside the block works byte by byte, as
//! on an LPC bus; bytes outside the registers read 0xff.
//!
//! Interrupt: the SCI, ISA IRQ [`SCI_IRQ`] (9), level-triggered and active
//! high (the MADT says so). The device drives it with
//! [`Interrupt::set_level`]: high while `PM1a_STS & PM1a_EN` is non-zero and
//! `SCI_EN` is set, low otherwise, and calls it only when that changes.
//!
//! Sleep: writing `SLP_EN` with `SLP_TYP` = [`SLP_TYP_S5`] (the `\_S5_`
//! package in the DSDT) calls [`PowerEvents::power_off`]; other sleep types
//! are not advertised and are ignored. The timer never sets `TMR_STS` (no
//! overflow SCI); Linux uses the timer as a clock source only.
//!
//! Construction: [`Pm::new`] with the SCI line and the VM's
//! [`PowerEvents`]; the timer counts from that moment on a monotonic clock.
//! [`Pm::with_clock`] takes another clock (tests). The runtime presses the
//! power button (`vmctl stop`) with [`Pm::press_power_button`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::{BusDevice, Interrupt, PowerEvents};

/// The first port of the PM register block.
pub const PM_PORT: u64 = 0x600;
/// Ports the PM block decodes.
pub const PM_PORT_LEN: u64 = 12;
/// PM1a event block (status + enable), as the FADT gives it.
pub const PM1A_EVT_BLK: u16 = 0x600;
/// Length of the PM1a event block in bytes.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block.
pub const PM1A_CNT_BLK: u16 = 0x604;
/// Length of the PM1a control block in bytes.
pub const PM1_CNT_LEN: u8 = 2;
/// PM timer block.
pub const PM_TMR_BLK: u16 = 0x608;
/// Length of the PM timer block in bytes.
pub const PM_TMR_LEN: u8 = 4;
/// ISA IRQ of the SCI (level, active high).
pub const SCI_IRQ: u32 = 9;
/// The sleep type of S5 (soft off), as the DSDT's `\_S5_` package says.
pub const SLP_TYP_S5: u8 = 5;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const STS: u64 = 0;
const EN: u64 = 2;
const CNT: u64 = 4;
const TMR: u64 = 8;

/// PM1 status and enable bits.
pub const PWRBTN: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
/// Status bits the hardware can set (others always read 0).
const STS_MASK: u16 = 0xc731;
/// Enable bits that exist: TMR, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE_DIS.
const EN_MASK: u16 = 0x4721;

const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// Bits of PM1_CNT that are kept (SLP_EN is write-only).
const CNT_MASK: u16 = 0x1c07;

/// A monotonic clock: time elapsed since the device was made.
pub type Clock = Box<dyn Fn() -> Duration + Send>;

/// The ACPI PM1a event/control registers and PM timer.
pub struct Pm {
    sci: Arc<dyn Interrupt>,
    power: Arc<dyn PowerEvents>,
    clock: Clock,
    sts: u16,
    en: u16,
    cnt: u16,
    sci_level: bool,
}

impl Pm {
    /// A PM block raising `sci` and reporting S5 to `power`; its timer
    /// starts now.
    pub fn new(sci: Arc<dyn Interrupt>, power: Arc<dyn PowerEvents>) -> Self {
        let start = Instant::now();
        Self::with_clock(sci, power, Box::new(move || start.elapsed()))
    }

    /// A PM block whose timer reads `clock`.
    pub fn with_clock(sci: Arc<dyn Interrupt>, power: Arc<dyn PowerEvents>, clock: Clock) -> Self {
        Pm {
            sci,
            power,
            clock,
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            sci_level: false,
        }
    }

    /// Presses the power button: sets `PWRBTN_STS` and raises the SCI if
    /// the guest enabled it. Returns whether `PWRBTN_EN` was set, that is
    /// whether an ACPI-aware guest is listening.
    pub fn press_power_button(&mut self) -> bool {
        self.sts |= PWRBTN;
        self.update_sci();
        self.en & PWRBTN != 0
    }

    /// The current PM timer value.
    pub fn timer(&self) -> u32 {
        let nanos = (self.clock)().as_nanos();
        // Wraps at 2^32 ticks (about 20 minutes), as the 32-bit counter does.
        (nanos * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u32
    }

    fn update_sci(&mut self) {
        let level = self.cnt & SCI_EN != 0 && self.sts & self.en != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn snapshot(&self) -> [u8; PM_PORT_LEN as usize] {
        let mut regs = [0u8; PM_PORT_LEN as usize];
        regs[0..2].copy_from_slice(&self.sts.to_le_bytes());
        regs[2..4].copy_from_slice(&self.en.to_le_bytes());
        regs[4..6].copy_from_slice(&(self.cnt & !SLP_EN).to_le_bytes());
        regs[6..8].copy_from_slice(&[0xff, 0xff]);
        regs[8..12].copy_from_slice(&self.timer().to_le_bytes());
        regs
    }

    fn write_byte(&mut self, offset: u64, v: u8) {
        let (reg, shift) = (offset & !1, (offset & 1) * 8);
        let bits = u16::from(v) << shift;
        let byte_mask = 0xffu16 << shift;
        match reg {
            STS => self.sts &= !(bits & STS_MASK),
            EN => self.en = (self.en & !byte_mask) | (bits & EN_MASK),
            CNT => {
                self.cnt = (self.cnt & !byte_mask) | (bits & CNT_MASK);
                if bits & SLP_EN != 0 {
                    self.sleep();
                }
            }
            // The timer is read-only; 6-7 is a hole.
            _ => {}
        }
    }

    fn sleep(&mut self) {
        let typ = ((self.cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8;
        if typ == SLP_TYP_S5 {
            tracing::debug!("ACPI S5: power off");
            self.power.power_off();
        } else {
            // Waking from an unsupported sleep state at once.
            tracing::debug!("ACPI sleep type {typ} not supported, ignored");
            self.sts |= WAK_STS;
        }
    }
}

impl BusDevice for Pm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let regs = self.snapshot();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| regs.get(o).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(o) if o < TMR => self.write_byte(o, b),
                _ => {}
            }
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line(Mutex<Vec<bool>>);
    impl Interrupt for Line {
        fn trigger(&self) {
            panic!("the SCI is a level line");
        }
        fn set_level(&self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }
    impl Line {
        fn levels(&self) -> Vec<bool> {
            self.0.lock().unwrap().clone()
        }
    }

    #[derive(Default)]
    struct Power {
        offs: AtomicU32,
        resets: AtomicU32,
    }
    impl PowerEvents for Power {
        fn power_off(&self) {
            self.offs.fetch_add(1, Ordering::SeqCst);
        }
        fn reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Fixture {
        pm: Pm,
        sci: Arc<Line>,
        power: Arc<Power>,
        nanos: Arc<AtomicU64>,
    }

    fn pm() -> Fixture {
        let sci = Arc::new(Line::default());
        let power = Arc::new(Power::default());
        let nanos = Arc::new(AtomicU64::new(0));
        let n = nanos.clone();
        let pm = Pm::with_clock(
            sci.clone(),
            power.clone(),
            Box::new(move || Duration::from_nanos(n.load(Ordering::SeqCst))),
        );
        Fixture {
            pm,
            sci,
            power,
            nanos,
        }
    }

    fn rd16(pm: &mut Pm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    fn wr16(pm: &mut Pm, off: u64, v: u16) {
        pm.write(off, &v.to_le_bytes());
    }

    #[test]
    fn sci_en_is_set_from_reset() {
        let mut f = pm();
        assert_eq!(rd16(&mut f.pm, CNT) & SCI_EN, SCI_EN);
    }

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let mut f = pm();
        wr16(&mut f.pm, CNT, SCI_EN | (3 << SLP_TYP_SHIFT) | SLP_EN);
        assert_eq!(f.power.offs.load(Ordering::SeqCst), 0);
        assert_eq!(rd16(&mut f.pm, STS) & WAK_STS, WAK_STS);
        // SLP_TYP alone does nothing; SLP_EN reads back as 0.
        wr16(&mut f.pm, CNT, SCI_EN | (5 << SLP_TYP_SHIFT));
        assert_eq!(f.power.offs.load(Ordering::SeqCst), 0);
        assert_eq!(rd16(&mut f.pm, CNT), SCI_EN | (5 << SLP_TYP_SHIFT));
        wr16(&mut f.pm, CNT, SCI_EN | (5 << SLP_TYP_SHIFT) | SLP_EN);
        assert_eq!(f.power.offs.load(Ordering::SeqCst), 1);
        assert_eq!(rd16(&mut f.pm, CNT) & SLP_EN, 0);
        assert_eq!(f.power.resets.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn power_button_raises_the_sci_only_when_enabled_and_clears_on_write_one() {
        let mut f = pm();
        // Not enabled: status set, line stays low.
        assert!(!f.pm.press_power_button());
        assert_eq!(rd16(&mut f.pm, STS) & PWRBTN, PWRBTN);
        assert!(f.sci.levels().is_empty());
        // Enabling with the status pending raises the line.
        wr16(&mut f.pm, EN, PWRBTN);
        assert_eq!(f.sci.levels(), vec![true]);
        // Writing 0 to the status changes nothing; writing 1 clears it.
        wr16(&mut f.pm, STS, 0);
        assert_eq!(rd16(&mut f.pm, STS) & PWRBTN, PWRBTN);
        wr16(&mut f.pm, STS, PWRBTN);
        assert_eq!(rd16(&mut f.pm, STS) & PWRBTN, 0);
        assert_eq!(f.sci.levels(), vec![true, false]);
        // A press with the enable set raises it again at once.
        assert!(f.pm.press_power_button());
        assert_eq!(f.sci.levels(), vec![true, false, true]);
        // A second press while pending does not repeat the level.
        f.pm.press_power_button();
        assert_eq!(f.sci.levels().len(), 3);
    }

    #[test]
    fn sci_follows_sci_en() {
        let mut f = pm();
        wr16(&mut f.pm, EN, PWRBTN);
        wr16(&mut f.pm, CNT, 0);
        f.pm.press_power_button();
        assert!(f.sci.levels().is_empty());
        wr16(&mut f.pm, CNT, SCI_EN);
        assert_eq!(f.sci.levels(), vec![true]);
    }

    #[test]
    fn a_dword_access_covers_status_and_enable() {
        let mut f = pm();
        f.pm.write(STS, &0x0100_0000u32.to_le_bytes());
        assert_eq!(rd16(&mut f.pm, EN), PWRBTN);
        f.pm.press_power_button();
        let mut four = [0u8; 4];
        f.pm.read(STS, &mut four);
        assert_eq!(u32::from_le_bytes(four), 0x0100_0100);
        // Byte-wide write of the status high byte clears PWRBTN_STS.
        f.pm.write(STS + 1, &[0x01]);
        assert_eq!(rd16(&mut f.pm, STS), 0);
    }

    #[test]
    fn timer_counts_at_3_579545_mhz_and_wraps_at_32_bits() {
        let mut f = pm();
        let mut four = [0u8; 4];
        f.pm.read(TMR, &mut four);
        assert_eq!(u32::from_le_bytes(four), 0);
        f.nanos.store(1_000_000_000, Ordering::SeqCst);
        f.pm.read(TMR, &mut four);
        assert_eq!(u32::from_le_bytes(four), 3_579_545);
        f.nanos.store(1_000, Ordering::SeqCst);
        assert_eq!(f.pm.timer(), 3);
        // 2^32 ticks later it is back where it was.
        let wrap = (1u128 << 32) * 1_000_000_000 / u128::from(PM_TIMER_HZ) + 1;
        f.nanos.store(wrap as u64, Ordering::SeqCst);
        assert!(f.pm.timer() < 2);
        // The timer is read-only.
        f.pm.write(TMR, &[0; 4]);
        f.nanos.store(1_000_000_000, Ordering::SeqCst);
        assert_eq!(f.pm.timer(), 3_579_545);
    }

    #[test]
    fn reserved_bits_and_out_of_range_accesses_are_ignored() {
        let mut f = pm();
        wr16(&mut f.pm, EN, 0xffff);
        assert_eq!(rd16(&mut f.pm, EN), EN_MASK);
        let mut b = [0u8; 4];
        f.pm.read(10, &mut b);
        assert_eq!(&b[2..], &[0xff, 0xff]);
        f.pm.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 4]);
        f.pm.write(u64::MAX, &[0xff; 4]);
        f.pm.write(6, &[0xff; 2]);
        assert_eq!(rd16(&mut f.pm, 6), 0xffff);
        assert_eq!(f.power.offs.load(Ordering::SeqCst), 0);
    }
}
