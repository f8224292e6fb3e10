//! The legacy PC platform: every port-I/O device of this crate built and
//! mapped on the VM's I/O bus in one call (what vmd's `x86_vm.c` does when
//! it initialises its emulated chips).
//!
//! Construction: [`Platform::attach`]`(&mut io_bus, PlatformConfig { .. })`
//! inserts, on the I/O bus:
//!
//! | ports         | device                         | IRQ          |
//! |---------------|--------------------------------|--------------|
//! | 0x3f8-0x3ff   | [`Serial`] (COM1)              | 4, edge      |
//! | 0x70-0x71     | [`Rtc`] (RTC/CMOS)             | 8, edge      |
//! | 0x60-0x64     | [`I8042`] (reset line)         | none         |
//! | 0x80          | [`PostCode`]                   | none         |
//! | 0x600-0x60b   | [`Pm`] (ACPI PM1a, PM timer)   | 9 (SCI), level |
//! | 0xcf9         | [`ResetControl`]               | none         |
//! | [`QUIET_PORTS`] | [`Probe`] (empty, not logged) | none        |
//!
//! starts the RTC's timer thread ([`RtcTimer`]), and returns typed handles
//! to the devices the runtime talks to: the serial port (console input:
//! [`Serial::enqueue_raw_bytes`]) and the PM block (the power button:
//! [`Pm::press_power_button`]). Keep the [`Platform`] for the life of the VM:
//! dropping it stops the RTC thread. Ports the in-kernel
//! PIC and PIT handle (0x20-0x21, 0x40-0x43, 0xa0-0xa1, 0x4d0-0x4d1) are
//! left free; 0x61 lies in the i8042's range but KVM's PIT answers it
//! before an exit reaches the bus. A PCI host bridge added later at 0xcf8 must
//! take 0xcf9's byte accesses over, see [`crate::cf9`].

use std::io::Write;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Bus, BusError, Interrupt, PowerEvents, SharedDevice};
use crate::cf9::{ResetControl, RESET_PORT, RESET_PORT_LEN};
use crate::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use crate::pm::{Pm, PM_PORT, PM_PORT_LEN};
use crate::port80::{PostCode, Probe, POST_PORT, QUIET_PORTS};
use crate::rtc::{CmosConfig, Rtc, RtcTimer, RTC_PORT, RTC_PORT_LEN};
use crate::serial::{Serial, COM1_PORT, SERIAL_PORT_LEN};

/// Errors from mapping the platform devices.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A device's ports are already taken on the bus.
    #[error("cannot map the {name} at port {base:#x}")]
    Map {
        /// The device.
        name: &'static str,
        /// Its first port.
        base: u64,
        /// Why.
        #[source]
        source: BusError,
    },
    /// The RTC's timer thread could not be created.
    #[error("cannot start the RTC timer thread")]
    RtcTimer(#[source] std::io::Error),
}

/// What the platform devices are connected to.
pub struct PlatformConfig {
    /// Memory sizes and vCPU count for the CMOS.
    pub cmos: CmosConfig,
    /// Where the guest's console output goes.
    pub console_out: Box<dyn Write + Send>,
    /// Signalled when the guest has read the console input FIFO empty.
    pub console_drained: Option<EventFd>,
    /// COM1's interrupt, ISA IRQ 4.
    pub com1_irq: Arc<dyn Interrupt>,
    /// The RTC's interrupt, ISA IRQ 8.
    pub rtc_irq: Arc<dyn Interrupt>,
    /// The ACPI SCI, ISA IRQ 9, level-triggered.
    pub sci: Arc<dyn Interrupt>,
    /// Power off and reset requests.
    pub power: Arc<dyn PowerEvents>,
}

/// Handles to the platform devices mapped on the I/O bus.
pub struct Platform {
    /// COM1: feed console input here.
    pub serial: Arc<Mutex<Serial>>,
    /// The ACPI PM block: press the power button here.
    pub pm: Arc<Mutex<Pm>>,
    /// The RTC/CMOS.
    pub rtc: Arc<Mutex<Rtc>>,
    /// The POST-code port.
    pub post: Arc<Mutex<PostCode>>,
    /// The thread raising the RTC's interrupts.
    pub rtc_timer: RtcTimer,
}

fn map(
    bus: &mut Bus,
    name: &'static str,
    dev: SharedDevice,
    base: u64,
    len: u64,
) -> Result<(), PlatformError> {
    bus.insert(dev, base, len)
        .map_err(|source| PlatformError::Map { name, base, source })
}

impl Platform {
    /// Builds the platform devices and maps them on `io_bus`.
    pub fn attach(io_bus: &mut Bus, cfg: PlatformConfig) -> Result<Platform, PlatformError> {
        let serial = Arc::new(Mutex::new(Serial::new(
            cfg.com1_irq,
            cfg.console_out,
            cfg.console_drained,
        )));
        let rtc = Arc::new(Mutex::new(Rtc::new(&cfg.cmos, Some(cfg.rtc_irq))));
        let pm = Arc::new(Mutex::new(Pm::new(cfg.sci, cfg.power.clone())));
        let post = Arc::new(Mutex::new(PostCode::new()));
        let i8042 = Arc::new(Mutex::new(I8042::new(cfg.power.clone())));
        let reset = Arc::new(Mutex::new(ResetControl::new(cfg.power)));

        map(
            io_bus,
            "serial port",
            serial.clone(),
            COM1_PORT,
            SERIAL_PORT_LEN,
        )?;
        map(io_bus, "RTC", rtc.clone(), RTC_PORT, RTC_PORT_LEN)?;
        map(io_bus, "PM registers", pm.clone(), PM_PORT, PM_PORT_LEN)?;
        map(io_bus, "POST port", post.clone(), POST_PORT, 1)?;
        map(io_bus, "i8042", i8042, I8042_PORT, I8042_PORT_LEN)?;
        map(io_bus, "reset register", reset, RESET_PORT, RESET_PORT_LEN)?;
        for &(base, len) in QUIET_PORTS {
            map(
                io_bus,
                "empty port range",
                Arc::new(Mutex::new(Probe::new())),
                base,
                len,
            )?;
        }
        let rtc_timer = RtcTimer::spawn(rtc.clone()).map_err(PlatformError::RtcTimer)?;
        Ok(Platform {
            serial,
            pm,
            rtc,
            post,
            rtc_timer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Line {
        edges: AtomicU32,
        level: Mutex<Option<bool>>,
    }
    impl Interrupt for Line {
        fn trigger(&self) {
            self.edges.fetch_add(1, Ordering::SeqCst);
        }
        fn set_level(&self, high: bool) {
            *self.level.lock().unwrap() = Some(high);
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

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Fixture {
        bus: Bus,
        platform: Platform,
        com1: Arc<Line>,
        rtc: Arc<Line>,
        sci: Arc<Line>,
        power: Arc<Power>,
        out: Sink,
    }

    fn fixture() -> Fixture {
        let com1 = Arc::new(Line::default());
        let rtc = Arc::new(Line::default());
        let sci = Arc::new(Line::default());
        let power = Arc::new(Power::default());
        let out = Sink::default();
        let mut bus = Bus::new();
        let platform = Platform::attach(
            &mut bus,
            PlatformConfig {
                cmos: CmosConfig {
                    ram_below_4g: 64 << 20,
                    ram_above_4g: 0,
                    vcpus: 4,
                },
                console_out: Box::new(out.clone()),
                console_drained: None,
                com1_irq: com1.clone(),
                rtc_irq: rtc.clone(),
                sci: sci.clone(),
                power: power.clone(),
            },
        )
        .unwrap();
        Fixture {
            bus,
            platform,
            com1,
            rtc,
            sci,
            power,
            out,
        }
    }

    fn inb(bus: &Bus, port: u64) -> u8 {
        let mut b = [0u8];
        assert!(bus.read(port, &mut b), "port {port:#x} unclaimed");
        b[0]
    }

    #[test]
    fn console_output_and_input_go_through_com1() {
        let f = fixture();
        for &b in b"ok\n" {
            assert!(f.bus.write(0x3f8, &[b]));
        }
        assert_eq!(&*f.out.0.lock().unwrap(), b"ok\n");
        // Enable the receive interrupt, then type.
        f.bus.write(0x3f9, &[0x01]);
        let edges = f.com1.edges.load(Ordering::SeqCst);
        assert_eq!(f.platform.serial.lock().unwrap().enqueue_raw_bytes(b"x"), 1);
        assert!(f.com1.edges.load(Ordering::SeqCst) > edges);
        assert_eq!(inb(&f.bus, 0x3f8), b'x');
    }

    #[test]
    fn the_three_reset_paths_and_s5_reach_power_events() {
        let f = fixture();
        f.bus.write(0x64, &[0xfe]);
        assert_eq!(f.power.resets.load(Ordering::SeqCst), 1);
        f.bus.write(0xcf9, &[0x06]);
        assert_eq!(f.power.resets.load(Ordering::SeqCst), 2);
        // SLP_TYP 5 | SLP_EN | SCI_EN on PM1a_CNT.
        f.bus
            .write(0x604, &((5u16 << 10) | (1 << 13) | 1).to_le_bytes());
        assert_eq!(f.power.offs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn power_button_raises_the_sci_once_the_guest_enables_it() {
        let f = fixture();
        f.bus.write(0x602, &0x0100u16.to_le_bytes());
        assert!(f.platform.pm.lock().unwrap().press_power_button());
        assert_eq!(*f.sci.level.lock().unwrap(), Some(true));
        let mut sts = [0u8; 2];
        f.bus.read(0x600, &mut sts);
        assert_eq!(u16::from_le_bytes(sts), 0x0100);
        f.bus.write(0x600, &0x0100u16.to_le_bytes());
        assert_eq!(*f.sci.level.lock().unwrap(), Some(false));
    }

    #[test]
    fn cmos_reports_the_configuration_and_post_codes_are_kept() {
        let f = fixture();
        f.bus.write(0x70, &[0x5f]);
        assert_eq!(inb(&f.bus, 0x71), 3);
        f.bus.write(0x80, &[0xaa]);
        assert_eq!(f.platform.post.lock().unwrap().last(), 0xaa);
        f.bus.write(0x70, &[0x0d]);
        assert_eq!(inb(&f.bus, 0x71), 0x80);
        // The RTC on the bus is the one the handle (and its timer) holds.
        f.platform.rtc.lock().unwrap().write(0, &[0x0d]);
        f.bus.write(0x70, &[0x40]);
        f.bus.write(0x71, &[0x5a]);
        f.platform.rtc.lock().unwrap().write(0, &[0x40]);
        let mut b = [0u8];
        f.platform.rtc.lock().unwrap().read(1, &mut b);
        assert_eq!(b[0], 0x5a);
        assert_eq!(
            f.rtc.edges.load(Ordering::SeqCst),
            0,
            "no RTC event enabled"
        );
    }

    #[test]
    fn probed_legacy_ports_are_answered_without_counting_as_unhandled() {
        let f = fixture();
        for port in [0xed, 0x2f8, 0x3e8, 0x2e8, 0x378, 0x3f0, 0x87, 0x3d4] {
            assert_eq!(inb(&f.bus, port), 0xff, "port {port:#x}");
        }
        assert_eq!(f.bus.unhandled(), 0);
        // The in-kernel PIC and PIT ports stay free for KVM. (Port 0x61,
        // inside the i8042's range, is answered by KVM's PIT before any
        // exit reaches us.)
        for port in [0x20, 0x21, 0x40, 0x43, 0xa0, 0x4d0] {
            let mut b = [0u8];
            assert!(!f.bus.read(port, &mut b), "port {port:#x} taken");
        }
    }

    #[test]
    fn attaching_twice_reports_the_clash() {
        let mut f = fixture();
        let err = Platform::attach(
            &mut f.bus,
            PlatformConfig {
                cmos: CmosConfig {
                    ram_below_4g: 0,
                    ram_above_4g: 0,
                    vcpus: 1,
                },
                console_out: Box::new(std::io::sink()),
                console_drained: None,
                com1_irq: f.com1.clone(),
                rtc_irq: f.com1.clone(),
                sci: f.sci.clone(),
                power: f.power.clone(),
            },
        )
        .err()
        .expect("second attach must fail");
        assert!(matches!(
            err,
            PlatformError::Map {
                base: 0x3f8,
                name: "serial port",
                ..
            }
        ));
    }

    /// Guest port I/O of any address, width and content never panics the
    /// host: a long pseudo-random sequence over the platform's ports.
    #[test]
    fn random_port_io_never_panics() {
        let f = fixture();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let hot = [0x3f8u64, 0x70, 0x60, 0x64, 0x80, 0x600, 0x604, 0x608, 0xcf9];
        for _ in 0..200_000 {
            let r = next();
            let port = if r & 1 == 0 {
                hot[(r >> 8) as usize % hot.len()] + (r >> 16) % 12
            } else {
                (r >> 8) % 0x1000
            };
            let len = ((r >> 32) % 10) as usize;
            let mut buf = vec![0u8; len];
            if r & 2 == 0 {
                f.bus.read(port, &mut buf);
            } else {
                for b in buf.iter_mut() {
                    *b = next() as u8;
                }
                f.bus.write(port, &buf);
            }
        }
        // Still working afterwards: the console prints.
        f.out.0.lock().unwrap().clear();
        f.bus.write(0x3fb, &[0x03]);
        f.bus.write(0x3fc, &[0x00]);
        f.bus.write(0x3f8, b"!");
        assert_eq!(&*f.out.0.lock().unwrap(), b"!");
    }
}
