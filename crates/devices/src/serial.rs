//! 16550A UART on COM1 (vmd's `ns8250.c`), built on `vm-superio`'s `Serial`.
//!
//! Ports and interrupt: [`COM1_PORT`] (0x3f8) .. +[`SERIAL_PORT_LEN`] (8) on
//! the I/O bus, ISA IRQ [`COM1_IRQ`] (4), edge-triggered.
//!
//! Construction: [`Serial::new`] takes the interrupt line, the output sink
//! (anything `Write + Send`: the VM's pty, stdout in the foreground runner)
//! and an optional [`EventFd`] that is signalled each time a guest read
//! empties the receive FIFO (not for reads of an already empty FIFO).
//!
//! Output: every byte the guest writes to the transmit register is written
//! and flushed to the sink at once, on the vCPU thread. Give a sink that
//! does not block (a non-blocking pty or pipe): a write error such as
//! `EAGAIN` when nobody reads loses that byte, counted by
//! [`Serial::lost_bytes`], and the guest carries on; a blocking sink would
//! stall the vCPU instead.
//!
//! Input: the runtime's event loop reads the console fd and hands the bytes
//! to [`Serial::enqueue_raw_bytes`], which accepts at most
//! [`Serial::fifo_capacity`] bytes (64 when empty) and returns how many it
//! took. When the FIFO is full the loop should stop reading the console
//! until the "drained" eventfd fires, so no input is lost.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusDevice, Interrupt};

/// Base I/O port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of I/O ports a 16550 decodes.
pub const SERIAL_PORT_LEN: u64 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;
/// Size of the receive FIFO.
pub const FIFO_SIZE: usize = 64;

/// Modem control register and its loopback bit (reading it has no effect).
const MCR_OFFSET: u8 = 4;
const MCR_LOOP: u8 = 0x10;

/// Adapts our [`Interrupt`] to `vm-superio`'s `Trigger`.
struct IrqTrigger(Arc<dyn Interrupt>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.trigger();
        Ok(())
    }
}

/// Output counters, fed by `vm-superio`.
#[derive(Default)]
struct Events {
    out_bytes: AtomicU64,
    lost_bytes: AtomicU64,
}

impl SerialEvents for Events {
    fn buffer_read(&self) {}

    fn out_byte(&self) {
        self.out_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.lost_bytes.fetch_add(1, Ordering::Relaxed);
    }

    // Called on every data read that leaves the FIFO empty, even one that
    // found it empty already; `Serial` signals real transitions instead.
    fn in_buffer_empty(&self) {}
}

type Inner = vm_superio::Serial<IrqTrigger, Arc<Events>, Box<dyn Write + Send>>;

/// A 16550A UART: the guest's console.
pub struct Serial {
    inner: Inner,
    events: Arc<Events>,
    drained: Option<EventFd>,
    dropped_input: u64,
}

impl Serial {
    /// A UART raising `irq`, writing guest output to `out`, and signalling
    /// `drained` (if given) whenever the guest empties the receive FIFO.
    pub fn new(
        irq: Arc<dyn Interrupt>,
        out: Box<dyn Write + Send>,
        drained: Option<EventFd>,
    ) -> Self {
        let events = Arc::new(Events::default());
        let inner = vm_superio::Serial::with_events(IrqTrigger(irq), events.clone(), out);
        Self {
            inner,
            events,
            drained,
            dropped_input: 0,
        }
    }

    /// Queues console input for the guest; returns how many bytes of `input`
    /// were taken (0 when the FIFO is full). The caller keeps the rest.
    ///
    /// In loopback mode the receiver is cut off from the line, as on the
    /// chip: input is taken and dropped (counted by
    /// [`Serial::dropped_input`]), so the caller never waits for a drain
    /// that cannot come.
    pub fn enqueue_raw_bytes(&mut self, input: &[u8]) -> usize {
        if self.inner.read(MCR_OFFSET) & MCR_LOOP != 0 {
            self.dropped_input += input.len() as u64;
            return input.len();
        }
        if input.is_empty() || self.inner.fifo_capacity() == 0 {
            return 0;
        }
        match self.inner.enqueue_raw_bytes(input) {
            Ok(n) => n,
            // Only `FullFifo` is possible here (the trigger is infallible
            // and the capacity was checked), and it means nothing was taken.
            Err(e) => {
                tracing::debug!("serial: input not queued: {e:?}");
                0
            }
        }
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn fifo_capacity(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// Console input dropped because the UART was in loopback mode.
    pub fn dropped_input(&self) -> u64 {
        self.dropped_input
    }

    /// Bytes written to the output sink so far.
    pub fn out_bytes(&self) -> u64 {
        self.events.out_bytes.load(Ordering::Relaxed)
    }

    /// Bytes the guest sent that could not be written to the sink.
    pub fn lost_bytes(&self) -> u64 {
        self.events.lost_bytes.load(Ordering::Relaxed)
    }
}

impl BusDevice for Serial {
    /// A wider-than-byte access reads consecutive registers, as on an ISA bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let was_pending = self.inner.fifo_capacity() < FIFO_SIZE;
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(o) if o < SERIAL_PORT_LEN => self.inner.read(o as u8),
                _ => 0xff,
            };
        }
        if was_pending && self.inner.fifo_capacity() == FIFO_SIZE {
            if let Some(fd) = &self.drained {
                if let Err(e) = fd.write(1) {
                    tracing::debug!("serial: cannot signal drained input: {e}");
                }
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .filter(|&o| o < SERIAL_PORT_LEN)
            else {
                continue;
            };
            if let Err(e) = self.inner.write(o as u8, b) {
                // An output error: the byte is lost (counted in the events).
                tracing::trace!("serial: output error: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // Register offsets and bits from the 16550 data sheet.
    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const IER_RDA: u8 = 0x01;
    const LSR_DR: u8 = 0x01;
    const LSR_THRE: u8 = 0x20;
    const IIR_NONE: u8 = 0x01;
    const IIR_RDA: u8 = 0x04;

    #[derive(Default)]
    struct Count(AtomicU64);
    impl Interrupt for Count {
        fn trigger(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
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

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Serial, Arc<Count>, Sink) {
        let irq = Arc::new(Count::default());
        let sink = Sink::default();
        let s = Serial::new(irq.clone(), Box::new(sink.clone()), None);
        (s, irq, sink)
    }

    fn rd(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    #[test]
    fn guest_output_reaches_the_sink_and_is_counted() {
        let (mut s, _, sink) = uart();
        for &b in b"hello\n" {
            s.write(DATA, &[b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        assert_eq!(s.out_bytes(), 6);
        assert_eq!(s.lost_bytes(), 0);
        assert_ne!(rd(&mut s, LSR) & LSR_THRE, 0);
    }

    #[test]
    fn output_errors_lose_the_byte_without_blocking() {
        let irq = Arc::new(Count::default());
        let mut s = Serial::new(irq, Box::new(Broken), None);
        s.write(DATA, b"x");
        s.write(DATA, b"y");
        assert_eq!(s.lost_bytes(), 2);
        assert_eq!(s.out_bytes(), 0);
    }

    #[test]
    fn input_is_read_back_in_order_and_raises_the_irq_when_enabled() {
        let (mut s, irq, _) = uart();
        s.write(IER, &[IER_RDA]);
        let before = irq.0.load(Ordering::SeqCst);
        assert_eq!(s.enqueue_raw_bytes(b"ab"), 2);
        assert!(irq.0.load(Ordering::SeqCst) > before);
        assert_eq!(rd(&mut s, IIR) & 0x0f, IIR_RDA);
        assert_ne!(rd(&mut s, LSR) & LSR_DR, 0);
        assert_eq!(rd(&mut s, DATA), b'a');
        assert_eq!(rd(&mut s, DATA), b'b');
        assert_eq!(rd(&mut s, LSR) & LSR_DR, 0);
        assert_eq!(rd(&mut s, IIR) & 0x0f, IIR_NONE);
    }

    #[test]
    fn input_respects_the_fifo_capacity() {
        let (mut s, _, _) = uart();
        let cap = s.fifo_capacity();
        assert_eq!(cap, FIFO_SIZE);
        let big = vec![b'z'; cap + 10];
        assert_eq!(s.enqueue_raw_bytes(&big), cap);
        assert_eq!(s.fifo_capacity(), 0);
        assert_eq!(s.enqueue_raw_bytes(b"more"), 0);
        assert_eq!(s.enqueue_raw_bytes(b""), 0);
        rd(&mut s, DATA);
        assert_eq!(s.fifo_capacity(), 1);
        assert_eq!(s.enqueue_raw_bytes(b"qr"), 1);
    }

    #[test]
    fn draining_the_fifo_signals_the_eventfd() {
        let irq = Arc::new(Count::default());
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(
            irq,
            Box::new(Sink::default()),
            Some(fd.try_clone().unwrap()),
        );
        s.enqueue_raw_bytes(b"xy");
        rd(&mut s, DATA);
        assert!(fd.read().is_err(), "signalled before the FIFO was empty");
        rd(&mut s, DATA);
        assert_eq!(fd.read().unwrap(), 1);
        // Reading an empty FIFO again is no news.
        rd(&mut s, DATA);
        assert!(fd.read().is_err(), "signalled for an already empty FIFO");
    }

    #[test]
    fn divisor_latch_and_wide_accesses_address_consecutive_registers() {
        let (mut s, _, sink) = uart();
        // DLAB on: offsets 0/1 are the divisor, not data/IER.
        s.write(LCR, &[0x80]);
        s.write(DATA, &[0x0c, 0x00]);
        let mut two = [0u8; 2];
        s.read(DATA, &mut two);
        assert_eq!(two, [0x0c, 0x00]);
        assert!(sink.0.lock().unwrap().is_empty());
        s.write(LCR, &[0x03]);
        assert_eq!(rd(&mut s, LCR), 0x03);
        s.write(MCR, &[0x0b]);
        assert_eq!(rd(&mut s, MCR), 0x0b);
    }

    #[test]
    fn out_of_range_offsets_are_ignored() {
        let (mut s, _, sink) = uart();
        let mut four = [0u8; 4];
        s.read(6, &mut four);
        assert_eq!(&four[2..], &[0xff, 0xff]);
        s.write(u64::MAX, &[1, 2]);
        s.write(100, b"x");
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn input_in_loopback_mode_is_dropped_not_left_waiting() {
        let (mut s, _, _) = uart();
        s.write(MCR, &[0x10]);
        assert_eq!(s.enqueue_raw_bytes(b"abc"), 3);
        assert_eq!(s.dropped_input(), 3);
        assert_eq!(s.fifo_capacity(), FIFO_SIZE);
        // Out of loopback, input queues again.
        s.write(MCR, &[0x0b]);
        assert_eq!(s.enqueue_raw_bytes(b"d"), 1);
        assert_eq!(rd(&mut s, DATA), b'd');
        assert_eq!(s.dropped_input(), 3);
    }
}
