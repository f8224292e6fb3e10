//! The guest console: COM1's output sink and the thread that feeds console
//! input into COM1 (vmd's `vm.c` pairs the ns8250 with the VM's tty fd the
//! same way, through its event loop).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use devices::serial::Serial;
use vmm_sys_util::eventfd::EventFd;

/// Writes guest output to an fd. For a pty or socket the fd is
/// non-blocking and output nobody reads is dropped (counted), as on a
/// serial line without a listener: a vCPU never blocks on the console.
pub struct FdSink {
    fd: OwnedFd,
    dropped: Arc<AtomicU64>,
}

impl FdSink {
    /// A sink writing to `fd`.
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Write for FdSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            // SAFETY: writes from a valid buffer of `buf.len()` bytes to an fd we own.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Nobody is reading (full pty buffer, no console attached): drop.
                Some(libc::EAGAIN) | Some(libc::EIO) => {
                    self.dropped.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    return Ok(buf.len());
                }
                _ => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets or clears `O_NONBLOCK` on an fd.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    // SAFETY: F_GETFL on a valid fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL on a valid fd with flags derived from F_GETFL.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: `fds` is a valid, writable array of pollfd of the given length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Feeds console input to COM1 until `stop` is signalled.
///
/// When the FIFO is full the thread waits for `drained` (the guest read
/// the FIFO empty) before reading more. At end of input (stdin closed) it
/// stops reading; on a hung-up pty (no console attached) it looks again
/// every 200 ms instead of spinning, since a console may attach later.
pub fn input_loop(input: OwnedFd, serial: Arc<Mutex<Serial>>, drained: EventFd, stop: EventFd) {
    let mut buf = [0u8; 64];
    let mut pending: Vec<u8> = Vec::new();
    let stop_fd = stop.as_raw_fd();
    // SAFETY: isatty only inspects the fd.
    let is_tty = unsafe { libc::isatty(input.as_raw_fd()) } == 1;
    loop {
        if !pending.is_empty() {
            let n = serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue_raw_bytes(&pending);
            pending.drain(..n);
        }
        let waiting_for_room = !pending.is_empty();
        let watched = if waiting_for_room {
            drained.as_raw_fd()
        } else {
            input.as_fd().as_raw_fd()
        };
        let mut fds = [pollfd(stop_fd), pollfd(watched)];
        if poll(&mut fds, -1).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if waiting_for_room {
            let _ = drained.read();
            continue;
        }
        let mut ended = fds[1].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: reads into a valid buffer of `buf.len()` bytes from an fd we own.
            let n = unsafe { libc::read(input.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                pending.extend_from_slice(&buf[..n as usize]);
                continue;
            }
            let e = std::io::Error::last_os_error();
            ended = n == 0 || !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
        }
        if !ended {
            continue;
        }
        if !is_tty {
            // End of a file or pipe: nothing more will come.
            wait_for(stop_fd);
            return;
        }
        // A pty whose other side is closed: a console may attach later.
        let mut s = [pollfd(stop_fd)];
        if poll(&mut s, 200).is_err() || s[0].revents != 0 {
            return;
        }
    }
}

fn wait_for(fd: i32) {
    let mut s = [pollfd(fd)];
    let _ = poll(&mut s, -1);
}
