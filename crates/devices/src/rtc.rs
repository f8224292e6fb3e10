//! MC146818 real-time clock and CMOS NVRAM (vmd's `mc146818.c`).
//!
//! Ports: [`RTC_PORT`] (0x70, index; bit 7 is the NMI mask and is ignored)
//! and 0x71 (data), so the device spans [`RTC_PORT_LEN`] (2) ports. ISA IRQ
//! [`RTC_IRQ`] (8), edge-triggered.
//!
//! Construction: [`Rtc::new`] with a [`CmosConfig`] (the RAM below and above
//! 4 GiB and the vCPU count, as the runtime laid them out) and the IRQ 8
//! line (or `None`); the clock is the host's wall clock ([`SystemTime`]), in
//! UTC. [`Rtc::with_clock`] takes another clock (tests).
//!
//! Interrupts: the periodic (rate from register A), alarm (registers 1, 3,
//! 5, with 0xc0-0xff as "any") and update-ended events set their flags in
//! register C whenever they happen, whether enabled or not (a guest may
//! poll), and raise IRQ 8 when register B enables them; reading C clears
//! the flags. Flags are brought up to date at each read of C; to raise the
//! interrupt on time, the runtime keeps an [`RtcTimer`]
//! ([`RtcTimer::spawn`]) alive next to the device: a thread that sleeps
//! until the next enabled event (not at all while none is enabled or the
//! guest has not acknowledged the last one) and stops when dropped.
//!
//! Time registers (0x00-0x09, century at [`CENTURY_REG`] = 0x32, as the FADT
//! says) read the clock at the moment of the read, in BCD or binary and in
//! 24 h or 12 h form as register B asks. A guest that writes them sets an
//! offset to the host clock, so its own setting sticks (`hwclock -w`).
//! Register A's update-in-progress bit is set during the last 244 µs of each
//! second, like the chip, which is what Linux's `mc146818_get_time` waits
//! out. Register D reports valid RAM and time.
//!
//! The NVRAM holds the memory sizes a BIOS reads: 0x15/0x16 base memory
//! (640 KiB), 0x17/0x18 and 0x30/0x31 extended memory above 1 MiB in KiB
//! (capped at 0xffff), 0x34/0x35 RAM between 16 MiB and 4 GiB in 64 KiB
//! units, 0x5b-0x5d RAM above 4 GiB in 64 KiB units, and 0x5f the number of
//! vCPUs minus one (SeaBIOS). The other bytes are plain storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bus::{BusDevice, Interrupt};

/// The index port; the data port follows it.
pub const RTC_PORT: u64 = 0x70;
/// Number of I/O ports the RTC decodes.
pub const RTC_PORT_LEN: u64 = 2;
/// ISA IRQ of the RTC (edge-triggered).
pub const RTC_IRQ: u32 = 8;
/// The CMOS byte holding the century, named in the FADT.
pub const CENTURY_REG: u8 = 0x32;

const NVRAM_SIZE: usize = 128;

const REG_SEC: u8 = 0x00;
const REG_MIN: u8 = 0x02;
const REG_HOUR: u8 = 0x04;
const REG_WDAY: u8 = 0x06;
const REG_MDAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;

const REG_SEC_ALARM: u8 = 0x01;
const REG_MIN_ALARM: u8 = 0x03;
const REG_HOUR_ALARM: u8 = 0x05;

const A_UIP: u8 = 0x80;
/// Rate select: the periodic interrupt's frequency.
const A_RS: u8 = 0x0f;
/// 32.768 kHz time base, 1024 Hz periodic rate: what a BIOS leaves.
const A_DEFAULT: u8 = 0x26;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
/// An alarm register value with both top bits set matches any value.
const ALARM_ANY: u8 = 0xc0;
const HOUR_PM: u8 = 0x80;

/// The update cycle: UIP is set this long before each second ends.
const UIP_WINDOW: Duration = Duration::from_micros(244);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What the CMOS reports about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmosConfig {
    /// Bytes of RAM below 4 GiB, counted from address 0 (the top of low
    /// RAM, below the PCI hole).
    pub ram_below_4g: u64,
    /// Bytes of RAM at and above 4 GiB.
    pub ram_above_4g: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// A source of wall-clock time: the duration since the Unix epoch.
pub type Clock = Box<dyn Fn() -> Duration + Send>;

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tm {
    year: i64,
    month: u32,
    mday: u32,
    hour: u32,
    min: u32,
    sec: u32,
    /// 1 = Sunday .. 7 = Saturday, as the chip counts.
    wday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1..=12).
fn days_from_civil(year: i64, month: u32, mday: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(mday) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let mday = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, mday)
}

impl Tm {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, mday) = civil_from_days(days);
        Tm {
            year,
            month,
            mday,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
            wday: (days + 4).rem_euclid(7) as u32 + 1,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.mday) * 86_400
            + i64::from(self.hour * 3600 + self.min * 60 + self.sec)
    }
}

fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    (((v / 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    // Invalid digits (a guest's choice) are taken as 9, never trusted.
    u32::from((v >> 4).min(9)) * 10 + u32::from((v & 0xf).min(9))
}

/// The MC146818 RTC with its 128 bytes of CMOS RAM.
pub struct Rtc {
    index: u8,
    nvram: [u8; NVRAM_SIZE],
    clock: Clock,
    /// Guest time minus host time, in seconds (set by writes to the clock).
    offset: i64,
    irq: Option<Arc<dyn Interrupt>>,
    /// Register C: the event flags and IRQF.
    flags: u8,
    /// Host clock reading up to which events have been accounted.
    processed: Duration,
    /// Wakes the [`RtcTimer`] when its next deadline may have changed.
    wake: Arc<Condvar>,
}

impl Rtc {
    /// An RTC on the host's wall clock reporting `config`, raising `irq`.
    pub fn new(config: &CmosConfig, irq: Option<Arc<dyn Interrupt>>) -> Self {
        Self::with_clock(
            config,
            irq,
            Box::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
            }),
        )
    }

    /// An RTC on `clock` reporting `config`, raising `irq`.
    pub fn with_clock(config: &CmosConfig, irq: Option<Arc<dyn Interrupt>>, clock: Clock) -> Self {
        let processed = clock();
        let mut rtc = Rtc {
            index: 0,
            nvram: [0; NVRAM_SIZE],
            clock,
            offset: 0,
            irq,
            flags: 0,
            processed,
            wake: Arc::new(Condvar::new()),
        };
        rtc.nvram[usize::from(REG_A)] = A_DEFAULT;
        rtc.nvram[usize::from(REG_B)] = B_24H;
        rtc.nvram[usize::from(REG_D)] = D_VRT;
        rtc.set_memory(config);
        rtc
    }

    fn set16(&mut self, reg: usize, v: u64) {
        let v = v.min(0xffff) as u16;
        self.nvram[reg..reg + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_memory(&mut self, c: &CmosConfig) {
        self.set16(0x15, 640);
        let ext_kib = c.ram_below_4g.saturating_sub(MIB) / KIB;
        self.set16(0x17, ext_kib);
        self.set16(0x30, ext_kib);
        self.set16(0x34, c.ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB));
        let high = (c.ram_above_4g / (64 * KIB)).min(0xff_ffff) as u32;
        self.nvram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        self.nvram[0x5f] = c.vcpus.saturating_sub(1).min(0xff) as u8;
    }

    fn now(&self) -> (i64, Duration) {
        let d = (self.clock)();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        (
            secs.saturating_add(self.offset),
            Duration::from_nanos(u64::from(d.subsec_nanos())),
        )
    }

    fn binary(&self) -> bool {
        self.nvram[usize::from(REG_B)] & B_DM_BINARY != 0
    }

    fn h24(&self) -> bool {
        self.nvram[usize::from(REG_B)] & B_24H != 0
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() {
            v.min(0xff) as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.binary() {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.h24() {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        self.encode(h12) | pm
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.h24() {
            return self.decode(v);
        }
        let h = self.decode(v & !HOUR_PM) % 12;
        if v & HOUR_PM != 0 {
            h + 12
        } else {
            h
        }
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let (secs, frac) = self.now();
        let tm = Tm::from_unix(secs);
        match reg {
            REG_SEC => self.encode(tm.sec),
            REG_MIN => self.encode(tm.min),
            REG_HOUR => self.encode_hour(tm.hour),
            REG_WDAY => self.encode(tm.wday),
            REG_MDAY => self.encode(tm.mday),
            REG_MONTH => self.encode(tm.month),
            REG_YEAR => self.encode(tm.year.rem_euclid(100) as u32),
            CENTURY_REG => self.encode(tm.year.div_euclid(100).clamp(0, 99) as u32),
            REG_A => {
                let a = self.nvram[usize::from(REG_A)] & !A_UIP;
                let updating = self.nvram[usize::from(REG_B)] & B_SET == 0
                    && frac >= Duration::from_secs(1) - UIP_WINDOW;
                if updating {
                    a | A_UIP
                } else {
                    a
                }
            }
            REG_D => D_VRT,
            _ => self.nvram[usize::from(reg) % NVRAM_SIZE],
        }
    }

    /// Reads register C: the flags up to now, cleared by the read.
    fn read_c(&mut self) -> u8 {
        self.process((self.clock)());
        let c = std::mem::take(&mut self.flags);
        // With IRQF clear the timer has edges to deliver again.
        self.wake.notify_all();
        c
    }

    /// The periodic interrupt's period, from register A's rate select.
    fn period(&self) -> Option<Duration> {
        let rs = self.nvram[usize::from(REG_A)] & A_RS;
        // Rates 1 and 2 repeat the 256 Hz and 128 Hz of 8 and 9.
        let hz = match rs {
            0 => return None,
            1 | 2 => 32_768u64 >> (rs + 6),
            _ => 32_768u64 >> (rs - 1),
        };
        Some(Duration::from_nanos(1_000_000_000 / hz))
    }

    /// Whether the alarm registers match guest time `secs`.
    fn alarm_matches(&self, secs: i64) -> bool {
        let tm = Tm::from_unix(secs);
        let field = |reg: u8, value: u32, hour: bool| {
            let a = self.nvram[usize::from(reg)];
            a & ALARM_ANY == ALARM_ANY
                || if hour {
                    self.decode_hour(a) == value
                } else {
                    self.decode(a) == value
                }
        };
        field(REG_SEC_ALARM, tm.sec, false)
            && field(REG_MIN_ALARM, tm.min, false)
            && field(REG_HOUR_ALARM, tm.hour, true)
    }

    /// Accounts the events between the last call and `now` (host clock)
    /// and raises the interrupt if an enabled one happened.
    fn process(&mut self, now: Duration) {
        let last = self.processed;
        self.processed = now;
        // A host clock stepped back restarts the accounting from there.
        if now <= last {
            return;
        }
        let b = self.nvram[usize::from(REG_B)];
        if let Some(p) = self.period() {
            if now.as_nanos() / p.as_nanos() > last.as_nanos() / p.as_nanos() {
                self.flags |= C_PF;
            }
        }
        let (from, to) = (last.as_secs(), now.as_secs());
        if b & B_SET == 0 && to > from {
            self.flags |= C_UF;
            if self.flags & C_AF == 0 {
                // Each h:m:s comes back within a day; look at most that far.
                let first = from.max(to.saturating_sub(86_400)) + 1;
                let hit = (first..=to).any(|s| {
                    let host = i64::try_from(s).unwrap_or(i64::MAX);
                    self.alarm_matches(host.saturating_add(self.offset))
                });
                if hit {
                    self.flags |= C_AF;
                }
            }
        }
        self.update_irq();
    }

    /// Sets IRQF, and raises the line, when an enabled flag is pending.
    fn update_irq(&mut self) {
        let b = self.nvram[usize::from(REG_B)];
        if self.flags & C_IRQF == 0 && self.flags & b & (C_PF | C_AF | C_UF) != 0 {
            self.flags |= C_IRQF;
            if let Some(irq) = &self.irq {
                irq.trigger();
            }
        }
    }

    /// When the next enabled event is due (host clock), if one can raise
    /// the interrupt: none while IRQF waits for the guest to read C.
    fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let b = self.nvram[usize::from(REG_B)];
        if self.flags & C_IRQF != 0 {
            return None;
        }
        let mut next = None;
        if b & B_PIE != 0 {
            if let Some(p) = self.period() {
                let n = now.as_nanos() / p.as_nanos() + 1;
                let at = n.saturating_mul(p.as_nanos());
                next = Some(Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX)));
            }
        }
        if b & (B_UIE | B_AIE) != 0 && b & B_SET == 0 {
            let second = Duration::from_secs(now.as_secs().saturating_add(1));
            next = Some(next.map_or(second, |n: Duration| n.min(second)));
        }
        next
    }

    /// Moves the guest's clock so that the field `reg` reads `v` now.
    fn set_time_field(&mut self, reg: u8, v: u8) {
        let (secs, _) = self.now();
        let mut tm = Tm::from_unix(secs);
        match reg {
            REG_SEC => tm.sec = self.decode(v).min(59),
            REG_MIN => tm.min = self.decode(v).min(59),
            REG_HOUR => tm.hour = self.decode_hour(v).min(23),
            REG_MDAY => tm.mday = self.decode(v).clamp(1, 31),
            REG_MONTH => tm.month = self.decode(v).clamp(1, 12),
            REG_YEAR => tm.year = tm.year.div_euclid(100) * 100 + i64::from(self.decode(v) % 100),
            CENTURY_REG => tm.year = i64::from(self.decode(v)) * 100 + tm.year.rem_euclid(100),
            // The day of the week follows from the date.
            _ => return,
        }
        let host = secs.saturating_sub(self.offset);
        self.offset = tm.to_unix().saturating_sub(host);
    }

    fn write_reg(&mut self, reg: u8, v: u8) {
        match reg {
            REG_SEC | REG_MIN | REG_HOUR | REG_WDAY | REG_MDAY | REG_MONTH | REG_YEAR
            | CENTURY_REG => self.set_time_field(reg, v),
            REG_A => {
                self.process((self.clock)());
                self.nvram[usize::from(REG_A)] = v & !A_UIP;
                self.wake.notify_all();
            }
            REG_B => {
                self.process((self.clock)());
                self.nvram[usize::from(REG_B)] = v;
                // Enabling an event whose flag is already set interrupts.
                self.update_irq();
                self.wake.notify_all();
            }
            // Read-only status registers.
            REG_C | REG_D => {}
            _ => self.nvram[usize::from(reg) % NVRAM_SIZE] = v,
        }
    }
}

/// The thread that raises the RTC's interrupts on time; stops when dropped.
pub struct RtcTimer {
    rtc: Arc<Mutex<Rtc>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Longest sleep of the timer thread without a deadline check, so that a
/// step of the host's wall clock is noticed.
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(1);
/// Stack size of the timer thread.
const TIMER_STACK: usize = 64 * 1024;

fn lock(rtc: &Mutex<Rtc>) -> std::sync::MutexGuard<'_, Rtc> {
    rtc.lock().unwrap_or_else(|e| e.into_inner())
}

impl RtcTimer {
    /// Starts the timer thread of `rtc` (the same `Arc` that is on the bus).
    pub fn spawn(rtc: Arc<Mutex<Rtc>>) -> std::io::Result<RtcTimer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rtc.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rtc".into())
            // It only does arithmetic under a lock: a small stack will do.
            .stack_size(TIMER_STACK)
            .spawn(move || Self::run(&r, &s))?;
        Ok(RtcTimer {
            rtc,
            stop,
            thread: Some(thread),
        })
    }

    fn run(rtc: &Mutex<Rtc>, stop: &AtomicBool) {
        let mut g = lock(rtc);
        let wake = g.wake.clone();
        while !stop.load(Ordering::Acquire) {
            let now = (g.clock)();
            g.process(now);
            g = match g.next_deadline(now) {
                None => wake.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let nap = at.saturating_sub(now).min(TIMER_MAX_SLEEP);
                    wake.wait_timeout(g, nap)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for RtcTimer {
    fn drop(&mut self) {
        {
            // Under the lock, so the thread cannot miss the wake-up between
            // its check of `stop` and its wait.
            let g = lock(&self.rtc);
            self.stop.store(true, Ordering::Release);
            g.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("rtc timer thread panicked");
            }
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(0) => self.index,
                Some(1) if self.index == REG_C => self.read_c(),
                Some(1) => self.read_reg(self.index),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                // Bit 7 masks NMIs on real hardware; we have none to mask.
                Some(0) => self.index = b & 0x7f,
                Some(1) => self.write_reg(self.index, b),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const GIB: u64 = 1024 * MIB;

    /// 2024-02-29 13:45:56.5 UTC, a Thursday.
    const T0: u64 = 1_709_214_356;

    fn cfg() -> CmosConfig {
        CmosConfig {
            ram_below_4g: 48 * MIB,
            ram_above_4g: 0,
            vcpus: 2,
        }
    }

    /// An RTC on a clock the test moves (nanoseconds since the epoch).
    fn rtc_at(config: &CmosConfig, nanos: u64) -> (Rtc, Arc<AtomicU64>) {
        rtc_with_irq(config, nanos, None)
    }

    fn rtc_with_irq(
        config: &CmosConfig,
        nanos: u64,
        irq: Option<Arc<dyn Interrupt>>,
    ) -> (Rtc, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(nanos));
        let t2 = t.clone();
        let rtc = Rtc::with_clock(
            config,
            irq,
            Box::new(move || Duration::from_nanos(t2.load(Ordering::SeqCst))),
        );
        (rtc, t)
    }

    #[derive(Default)]
    struct Edges(AtomicU64);
    impl Interrupt for Edges {
        fn trigger(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Edges {
        fn count(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const SEC: u64 = 1_000_000_000;

    /// An RTC at T0 + 0.5 s with a counted IRQ line and the periodic
    /// rate set to 0 (off), so tests see only the events they are about.
    fn irq_rtc() -> (Rtc, Arc<AtomicU64>, Arc<Edges>) {
        let e = Arc::new(Edges::default());
        let (mut r, t) = rtc_with_irq(&cfg(), T0 * SEC + SEC / 2, Some(e.clone()));
        wr(&mut r, REG_A, 0x20);
        (r, t, e)
    }

    fn rd(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0, &[reg]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    fn wr(rtc: &mut Rtc, reg: u8, v: u8) {
        rtc.write(0, &[reg]);
        rtc.write(1, &[v]);
    }

    #[test]
    fn calendar_conversion_round_trips() {
        for days in [-1_000_000i64, -1, 0, 59, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(Tm::from_unix(0).wday, 5); // Thursday
    }

    #[test]
    fn time_reads_in_bcd_24h_by_default() {
        let (mut r, _) = rtc_at(&cfg(), T0 * 1_000_000_000 + 500_000_000);
        assert_eq!(rd(&mut r, REG_SEC), 0x56);
        assert_eq!(rd(&mut r, REG_MIN), 0x45);
        assert_eq!(rd(&mut r, REG_HOUR), 0x13);
        assert_eq!(rd(&mut r, REG_WDAY), 5);
        assert_eq!(rd(&mut r, REG_MDAY), 0x29);
        assert_eq!(rd(&mut r, REG_MONTH), 0x02);
        assert_eq!(rd(&mut r, REG_YEAR), 0x24);
        assert_eq!(rd(&mut r, CENTURY_REG), 0x20);
        assert_eq!(rd(&mut r, REG_D), D_VRT);
        assert_eq!(rd(&mut r, REG_C), 0);
    }

    #[test]
    fn binary_and_12_hour_modes_follow_register_b() {
        let (mut r, _) = rtc_at(&cfg(), T0 * 1_000_000_000);
        wr(&mut r, REG_B, B_DM_BINARY);
        assert_eq!(rd(&mut r, REG_SEC), 56);
        assert_eq!(rd(&mut r, REG_YEAR), 24);
        assert_eq!(rd(&mut r, CENTURY_REG), 20);
        assert_eq!(rd(&mut r, REG_HOUR), HOUR_PM | 1);
        wr(&mut r, REG_B, 0);
        assert_eq!(rd(&mut r, REG_HOUR), HOUR_PM | 0x01);
        // Midnight in 12 h form is 12 AM.
        let (mut r, _) = rtc_at(&cfg(), (T0 - 13 * 3600 - 45 * 60) * 1_000_000_000);
        wr(&mut r, REG_B, 0);
        assert_eq!(rd(&mut r, REG_HOUR), 0x12);
    }

    #[test]
    fn uip_is_set_only_just_before_the_second_ends() {
        let (mut r, t) = rtc_at(&cfg(), T0 * 1_000_000_000 + 999_900_000);
        assert_eq!(rd(&mut r, REG_A), A_UIP | A_DEFAULT);
        t.store(T0 * 1_000_000_000 + 500_000_000, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_A), A_DEFAULT);
        // The guest cannot set UIP itself, and SET stops the update cycle.
        wr(&mut r, REG_A, 0xa6);
        assert_eq!(rd(&mut r, REG_A), A_DEFAULT);
        t.store(T0 * 1_000_000_000 + 999_900_000, Ordering::SeqCst);
        wr(&mut r, REG_B, B_SET | B_24H);
        assert_eq!(rd(&mut r, REG_A), A_DEFAULT);
    }

    #[test]
    fn the_clock_advances_with_the_host() {
        let (mut r, t) = rtc_at(&cfg(), T0 * 1_000_000_000);
        t.store((T0 + 3) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_SEC), 0x59);
        t.store((T0 + 4) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_SEC), 0x00);
        assert_eq!(rd(&mut r, REG_MIN), 0x46);
    }

    #[test]
    fn guest_writes_set_the_clock_and_it_keeps_running() {
        let (mut r, t) = rtc_at(&cfg(), T0 * 1_000_000_000);
        wr(&mut r, REG_B, B_SET | B_24H);
        wr(&mut r, REG_YEAR, 0x99);
        wr(&mut r, CENTURY_REG, 0x19);
        wr(&mut r, REG_MONTH, 0x12);
        wr(&mut r, REG_MDAY, 0x31);
        wr(&mut r, REG_HOUR, 0x23);
        wr(&mut r, REG_MIN, 0x59);
        wr(&mut r, REG_SEC, 0x58);
        wr(&mut r, REG_B, B_24H);
        t.store((T0 + 2) * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_SEC), 0x00);
        assert_eq!(rd(&mut r, REG_MIN), 0x00);
        assert_eq!(rd(&mut r, REG_HOUR), 0x00);
        assert_eq!(rd(&mut r, REG_MDAY), 0x01);
        assert_eq!(rd(&mut r, REG_MONTH), 0x01);
        assert_eq!(rd(&mut r, REG_YEAR), 0x00);
        assert_eq!(rd(&mut r, CENTURY_REG), 0x20);
    }

    #[test]
    fn garbage_time_writes_are_clamped() {
        let (mut r, _) = rtc_at(&cfg(), T0 * 1_000_000_000);
        wr(&mut r, REG_SEC, 0xff);
        assert_eq!(rd(&mut r, REG_SEC), 0x59);
        wr(&mut r, REG_MONTH, 0x00);
        assert_eq!(rd(&mut r, REG_MONTH), 0x01);
        wr(&mut r, REG_B, B_DM_BINARY | B_24H);
        wr(&mut r, REG_HOUR, 200);
        assert_eq!(rd(&mut r, REG_HOUR), 23);
    }

    #[test]
    fn memory_sizes_for_a_small_guest() {
        let (mut r, _) = rtc_at(&cfg(), 0);
        let w = |r: &mut Rtc, i: u8| u16::from_le_bytes([rd(r, i), rd(r, i + 1)]);
        assert_eq!(w(&mut r, 0x15), 640);
        assert_eq!(w(&mut r, 0x17), 47 * 1024);
        assert_eq!(w(&mut r, 0x30), 47 * 1024);
        assert_eq!(w(&mut r, 0x34), 512);
        assert_eq!(
            [rd(&mut r, 0x5b), rd(&mut r, 0x5c), rd(&mut r, 0x5d)],
            [0; 3]
        );
        assert_eq!(rd(&mut r, 0x5f), 1);
    }

    #[test]
    fn memory_sizes_for_a_large_guest_are_capped_and_split() {
        let c = CmosConfig {
            ram_below_4g: 3 * GIB,
            ram_above_4g: 13 * GIB,
            vcpus: 8,
        };
        let (mut r, _) = rtc_at(&c, 0);
        let w = |r: &mut Rtc, i: u8| u16::from_le_bytes([rd(r, i), rd(r, i + 1)]);
        assert_eq!(w(&mut r, 0x17), 0xffff);
        assert_eq!(w(&mut r, 0x30), 0xffff);
        assert_eq!(w(&mut r, 0x34), ((3 * GIB - 16 * MIB) / (64 * KIB)) as u16);
        let high = u32::from_le_bytes([rd(&mut r, 0x5b), rd(&mut r, 0x5c), rd(&mut r, 0x5d), 0]);
        assert_eq!(u64::from(high), 13 * GIB / (64 * KIB));
        assert_eq!(rd(&mut r, 0x5f), 7);
    }

    #[test]
    fn nvram_is_storage_and_indices_are_masked() {
        let (mut r, _) = rtc_at(&cfg(), 0);
        wr(&mut r, 0x40, 0xab);
        assert_eq!(rd(&mut r, 0x40), 0xab);
        // NMI-mask bit: 0xc0 selects 0x40.
        r.write(0, &[0xc0]);
        let mut b = [0u8];
        r.read(1, &mut b);
        assert_eq!(b[0], 0xab);
        r.read(0, &mut b);
        assert_eq!(b[0], 0x40);
        // Status C and D are read-only.
        wr(&mut r, REG_D, 0);
        assert_eq!(rd(&mut r, REG_D), D_VRT);
        // Accesses past the two ports and wide accesses do not panic.
        let mut four = [0u8; 4];
        r.read(0, &mut four);
        assert_eq!(&four[2..], &[0xff, 0xff]);
        r.write(5, &[1]);
        r.write(u64::MAX, &[1, 2]);
        r.write(0, &[0x7f, 0x55]);
        assert_eq!(rd(&mut r, 0x7f), 0x55);
    }

    #[test]
    fn update_ended_interrupt_fires_once_per_second_until_acknowledged() {
        let (mut r, t, irq) = irq_rtc();
        wr(&mut r, REG_B, B_24H | B_UIE);
        assert_eq!(irq.count(), 0);
        t.store((T0 + 1) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_UF);
        assert_eq!(irq.count(), 1);
        // Read clears; nothing new within the same second.
        assert_eq!(rd(&mut r, REG_C), 0);
        t.store((T0 + 2) * SEC, Ordering::SeqCst);
        r.process((r.clock)());
        assert_eq!(irq.count(), 2);
        // Not acknowledged: the next second sets UF but no new edge.
        t.store((T0 + 3) * SEC, Ordering::SeqCst);
        r.process((r.clock)());
        assert_eq!(irq.count(), 2);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_UF);
    }

    #[test]
    fn disabled_events_set_flags_for_polling_without_interrupting() {
        let (mut r, t, irq) = irq_rtc();
        wr(&mut r, REG_A, A_DEFAULT);
        t.store((T0 + 1) * SEC, Ordering::SeqCst);
        // Rate 6 = 1024 Hz periodic flag, update flag; no enables.
        assert_eq!(rd(&mut r, REG_C), C_PF | C_UF);
        assert_eq!(irq.count(), 0);
        // Enabling an event whose flag is pending interrupts at once.
        t.store((T0 + 2) * SEC, Ordering::SeqCst);
        r.process((r.clock)());
        wr(&mut r, REG_B, B_24H | B_UIE);
        assert_eq!(irq.count(), 1);
    }

    #[test]
    fn a_host_clock_step_back_does_not_stall_events() {
        let (mut r, t, irq) = irq_rtc();
        wr(&mut r, REG_B, B_24H | B_UIE);
        t.store((T0 - 100) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C), 0);
        t.store((T0 - 99) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_UF);
        assert_eq!(irq.count(), 1);
    }

    #[test]
    fn set_bit_stops_update_events() {
        let (mut r, t, irq) = irq_rtc();
        wr(&mut r, REG_B, B_SET | B_24H | B_UIE);
        t.store((T0 + 5) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C) & C_UF, 0);
        assert_eq!(irq.count(), 0);
    }

    #[test]
    fn periodic_interrupt_follows_the_rate_in_register_a() {
        let (mut r, t, irq) = irq_rtc();
        // Rate 15: 2 Hz, a period of 500 ms.
        wr(&mut r, REG_A, 0x2f);
        wr(&mut r, REG_B, B_24H | B_PIE);
        rd(&mut r, REG_C);
        t.store(T0 * SEC + SEC / 2 + 400_000_000, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C) & C_PF, 0);
        t.store(T0 * SEC + SEC / 2 + 600_000_000, Ordering::SeqCst);
        // (The second also ended: UF, not enabled.)
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_PF | C_UF);
        assert_eq!(irq.count(), 1);
        // Rate 0 turns it off.
        wr(&mut r, REG_A, 0x20);
        t.store((T0 + 9) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C) & C_PF, 0);
    }

    #[test]
    fn alarm_fires_at_its_time_and_wildcards_match_anything() {
        let (mut r, t, irq) = irq_rtc();
        // Clock at 13:45:56.5; alarm at 13:45:58.
        wr(&mut r, REG_HOUR_ALARM, 0x13);
        wr(&mut r, REG_MIN_ALARM, 0x45);
        wr(&mut r, REG_SEC_ALARM, 0x58);
        wr(&mut r, REG_B, B_24H | B_AIE);
        t.store((T0 + 1) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C), C_UF);
        t.store((T0 + 2) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_AF | C_UF);
        assert_eq!(irq.count(), 1);
        // Seconds "any": fires every second of 13:45.
        wr(&mut r, REG_SEC_ALARM, 0xff);
        t.store((T0 + 3) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C) & C_AF, C_AF);
        // An alarm passed while nobody looked is still reported.
        wr(&mut r, REG_SEC_ALARM, 0x10);
        wr(&mut r, REG_MIN_ALARM, 0x46);
        t.store((T0 + 3600) * SEC, Ordering::SeqCst);
        assert_eq!(rd(&mut r, REG_C) & C_AF, C_AF);
    }

    #[test]
    fn next_deadline_is_the_earliest_enabled_event() {
        let (mut r, _, _) = irq_rtc();
        let now = Duration::from_nanos(T0 * SEC + SEC / 2);
        assert_eq!(r.next_deadline(now), None);
        wr(&mut r, REG_B, B_24H | B_UIE);
        assert_eq!(r.next_deadline(now), Some(Duration::from_secs(T0 + 1)));
        // 1024 Hz periodic comes first.
        wr(&mut r, REG_A, A_DEFAULT);
        wr(&mut r, REG_B, B_24H | B_UIE | B_PIE);
        let next = r.next_deadline(now).unwrap();
        assert!(
            next > now && next - now <= Duration::from_micros(977),
            "{next:?}"
        );
        // Unacknowledged: nothing to wake up for.
        r.flags |= C_IRQF;
        assert_eq!(r.next_deadline(now), None);
    }

    /// An interrupt line that reports each edge on a channel.
    struct Chan(Mutex<std::sync::mpsc::Sender<()>>);
    impl Interrupt for Chan {
        fn trigger(&self) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    #[test]
    fn the_timer_thread_raises_update_interrupts_and_stops_when_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let rtc = Arc::new(Mutex::new(Rtc::new(
            &cfg(),
            Some(Arc::new(Chan(Mutex::new(tx)))),
        )));
        let timer = RtcTimer::spawn(rtc.clone()).unwrap();
        {
            let mut g = rtc.lock().unwrap();
            wr(&mut g, REG_B, B_24H | B_UIE);
        }
        // A liveness bound, not a speed check: the event is due within 1 s.
        rx.recv_timeout(Duration::from_secs(30))
            .expect("no update interrupt from the timer thread");
        {
            let mut g = rtc.lock().unwrap();
            assert_eq!(rd(&mut g, REG_C) & (C_IRQF | C_UF), C_IRQF | C_UF);
        }
        rx.recv_timeout(Duration::from_secs(30))
            .expect("no second interrupt after the acknowledgement");
        drop(timer);
        // The thread is gone: it holds no reference any more.
        assert_eq!(Arc::strong_count(&rtc), 1);
    }
}
