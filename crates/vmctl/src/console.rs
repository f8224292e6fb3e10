//! `vmctl console`: a built-in terminal on a VM's pty, in place of the
//! `cu -l TTY -s 115200` that vmctl's `ctl_openconsole` runs. The local
//! terminal goes raw, bytes are copied both ways, `~.` at the start of a
//! line leaves, and the terminal is restored on every way out.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno as NixErrno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, BaudRate, SetArg, Termios};

use crate::errno::Errno;

/// The escape character, recognised at the start of a line.
pub const ESCAPE: u8 = b'~';

/// The line speed cu is asked for (meaningless on a pty, printed as cu
/// does).
pub const SPEED: u32 = 115_200;

/// What the escape sequences on the keyboard ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeEvent {
    /// `~.` or `~^D`: leave.
    Disconnect,
    /// `~?`: list the escapes.
    Help,
}

/// The escapes and what they do, printed for `~?`.
pub const HELP: &str =
    "\r\n~.\tdrop connection\r\n~^D\tdrop connection\r\n~~\tsend a ~\r\n~?\tthis list\r\n";

/// Splits keyboard input into bytes for the VM and escape events. A `~`
/// right after the start or after a newline or carriage return starts an
/// escape; the byte after it decides: `.` or ^D leave, `~` sends one `~`,
/// `?` shows the list, anything else is sent along with the `~`.
#[derive(Debug, Clone)]
pub struct EscapeFilter {
    at_line_start: bool,
    after_escape: bool,
}

impl Default for EscapeFilter {
    fn default() -> Self {
        EscapeFilter {
            at_line_start: true,
            after_escape: false,
        }
    }
}

/// The result of filtering a chunk of keyboard input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes to write to the VM.
    pub send: Vec<u8>,
    /// Escapes found, in order; nothing after a disconnect is looked at.
    pub events: Vec<EscapeEvent>,
}

impl EscapeFilter {
    /// Filters one chunk; state carries over to the next chunk, so an
    /// escape split across two reads still works.
    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        for &byte in input {
            if self.after_escape {
                self.after_escape = false;
                match byte {
                    b'.' | 0x04 => {
                        out.events.push(EscapeEvent::Disconnect);
                        return out;
                    }
                    b'?' => {
                        out.events.push(EscapeEvent::Help);
                        continue;
                    }
                    ESCAPE => out.send.push(ESCAPE),
                    other => out.send.extend_from_slice(&[ESCAPE, other]),
                }
            } else if self.at_line_start && byte == ESCAPE {
                self.after_escape = true;
                continue;
            } else {
                out.send.push(byte);
            }
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        out
    }
}

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The tty could not be opened
    #[error("failed to open the console: {path}: {err}")]
    Open {
        /// The tty.
        path: String,
        /// Why.
        err: Errno,
    },
    /// The terminal settings could not be read or changed
    #[error("console terminal settings: {0}")]
    Terminal(Errno),
    /// Signals could not be redirected to the loop
    #[error("console signals: {0}")]
    Signals(Errno),
    /// Waiting for input failed
    #[error("console poll: {0}")]
    Poll(Errno),
    /// Reading or writing failed
    #[error("console i/o: {0}")]
    Io(Errno),
}

/// Why the copy loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The user typed `~.`.
    Escape,
    /// The VM side hung up (the VM stopped).
    LineClosed,
    /// The keyboard side reached end of file.
    InputClosed,
    /// A signal asked us to leave.
    Signal,
}

/// Puts a terminal into raw mode and restores its settings when dropped.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    /// Makes the terminal raw; `None` if `fd` is not a terminal.
    pub fn enable(
        fd: BorrowedFd<'fd>,
        speed: Option<BaudRate>,
    ) -> Result<Option<Self>, ConsoleError> {
        let saved = match termios::tcgetattr(fd) {
            Ok(t) => t,
            Err(NixErrno::ENOTTY | NixErrno::EINVAL) => return Ok(None),
            Err(e) => return Err(ConsoleError::Terminal(Errno(e as i32))),
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if let Some(speed) = speed {
            termios::cfsetspeed(&mut raw, speed)
                .map_err(|e| ConsoleError::Terminal(Errno(e as i32)))?;
        }
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw)
            .map_err(|e| ConsoleError::Terminal(Errno(e as i32)))?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Writes all of `buf` to a descriptor, waiting when it is full.
fn write_fd(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), NixErrno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(NixErrno::EINTR) => {}
            Err(NixErrno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies keyboard input (through the escape filter) to the line and the
/// line's output to `output`, until an escape, a hang-up on either side,
/// or a signal on `signals`.
pub fn relay(
    input: BorrowedFd<'_>,
    line: BorrowedFd<'_>,
    output: &mut dyn Write,
    signals: Option<BorrowedFd<'_>>,
) -> Result<End, ConsoleError> {
    let io = |e: NixErrno| ConsoleError::Io(Errno(e as i32));
    let mut filter = EscapeFilter::default();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = vec![
            PollFd::new(input, PollFlags::POLLIN),
            PollFd::new(line, PollFlags::POLLIN),
        ];
        if let Some(sig) = signals {
            fds.push(PollFd::new(sig, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(NixErrno::EINTR) => continue,
            Err(e) => return Err(ConsoleError::Poll(Errno(e as i32))),
        }
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let (keys, vm) = (ready(0), ready(1));
        let signalled = fds.len() > 2 && !ready(2).is_empty();
        if signalled {
            return Ok(End::Signal);
        }
        // The VM's output first, so nothing it printed is lost at exit.
        if vm.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(line, &mut buf) {
                // EIO: the other side of a pty is closed.
                Ok(0) | Err(NixErrno::EIO) => return Ok(End::LineClosed),
                Ok(n) => {
                    output
                        .write_all(&buf[..n])
                        .map_err(|e| ConsoleError::Io(Errno::from_io(&e)))?;
                    output
                        .flush()
                        .map_err(|e| ConsoleError::Io(Errno::from_io(&e)))?;
                }
                Err(NixErrno::EINTR | NixErrno::EAGAIN) => {}
                Err(e) => return Err(io(e)),
            }
        }
        if keys.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(input, &mut buf) {
                Ok(0) => return Ok(End::InputClosed),
                Ok(n) => {
                    let filtered = filter.feed(&buf[..n]);
                    write_fd(line, &filtered.send).map_err(io)?;
                    for event in filtered.events {
                        match event {
                            EscapeEvent::Disconnect => return Ok(End::Escape),
                            EscapeEvent::Help => {
                                output
                                    .write_all(HELP.as_bytes())
                                    .map_err(|e| ConsoleError::Io(Errno::from_io(&e)))?;
                                output
                                    .flush()
                                    .map_err(|e| ConsoleError::Io(Errno::from_io(&e)))?;
                            }
                        }
                    }
                }
                Err(NixErrno::EINTR | NixErrno::EAGAIN) => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
}

/// Opens the VM's tty and runs the console on this process's stdin and
/// stdout until the user leaves or the VM's side hangs up.
pub fn run(tty: &Path) -> Result<End, ConsoleError> {
    let line: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(tty)
        .map_err(|e| ConsoleError::Open {
            path: tty.display().to_string(),
            err: Errno::from_io(&e),
        })?;
    let _line_mode = RawMode::enable(line.as_fd(), Some(BaudRate::B115200))?;

    // Signals that would kill us with the terminal raw are turned into
    // input for the loop instead.
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(signal);
    }
    let old_mask = mask
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| ConsoleError::Signals(Errno(e as i32)))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ConsoleError::Signals(Errno(e as i32)));

    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = signals.and_then(|signals| {
        let raw = RawMode::enable(stdin.as_fd(), None)?;
        let _ = write!(out, "Connected to {} (speed {SPEED})\r\n", tty.display());
        let _ = out.flush();
        let end = relay(stdin.as_fd(), line.as_fd(), &mut out, Some(signals.as_fd()));
        if let Ok(End::Signal) = end {
            // Take the pending signal so that unblocking it below does not
            // deliver it.
            let _ = signals.read_signal();
        }
        // Still raw: "\r\n" reaches the terminal as written.
        let _ = write!(out, "\r\n[EOT]\r\n");
        let _ = out.flush();
        drop(raw);
        end
    });
    let _ = old_mask.thread_set_mask();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    fn feed_all(chunks: &[&[u8]]) -> Filtered {
        let mut filter = EscapeFilter::default();
        let mut total = Filtered::default();
        for chunk in chunks {
            let part = filter.feed(chunk);
            total.send.extend(part.send);
            total.events.extend(part.events);
        }
        total
    }

    #[test]
    fn tilde_dot_at_the_start_disconnects() {
        let out = feed_all(&[b"~."]);
        assert_eq!(out.send, b"");
        assert_eq!(out.events, [EscapeEvent::Disconnect]);
    }

    #[test]
    fn tilde_dot_after_a_newline_disconnects_and_drops_the_rest() {
        let out = feed_all(&[b"ls\r~.more"]);
        assert_eq!(out.send, b"ls\r");
        assert_eq!(out.events, [EscapeEvent::Disconnect]);
        let out = feed_all(&[b"ls\n~\x04"]);
        assert_eq!(out.events, [EscapeEvent::Disconnect]);
    }

    #[test]
    fn tilde_inside_a_line_is_plain_text() {
        let out = feed_all(&[b"cd ~.\r"]);
        assert_eq!(out.send, b"cd ~.\r");
        assert!(out.events.is_empty());
    }

    #[test]
    fn escape_split_across_reads() {
        let out = feed_all(&[b"x\r", b"~", b"."]);
        assert_eq!(out.send, b"x\r");
        assert_eq!(out.events, [EscapeEvent::Disconnect]);
    }

    #[test]
    fn double_tilde_sends_one() {
        let out = feed_all(&[b"~~.\r"]);
        assert_eq!(out.send, b"~.\r");
        assert!(out.events.is_empty());
    }

    #[test]
    fn unknown_escape_sends_both_bytes() {
        let out = feed_all(&[b"~x"]);
        assert_eq!(out.send, b"~x");
        // After "~x" we are mid-line: a following "~." is text.
        let out = feed_all(&[b"~x~."]);
        assert_eq!(out.send, b"~x~.");
        // "~\r" sends both and starts a new line.
        let out = feed_all(&[b"~\r~."]);
        assert_eq!(out.send, b"~\r");
        assert_eq!(out.events, [EscapeEvent::Disconnect]);
    }

    #[test]
    fn help_is_an_event_and_sends_nothing() {
        let out = feed_all(&[b"~?a"]);
        assert_eq!(out.send, b"a");
        assert_eq!(out.events, [EscapeEvent::Help]);
    }

    /// A pair of connected sockets standing for the keyboard and the VM.
    fn pair() -> (OwnedFd, OwnedFd) {
        let (a, b) = UnixStream::pair().unwrap();
        (OwnedFd::from(a), OwnedFd::from(b))
    }

    #[test]
    fn relay_copies_both_ways_and_leaves_on_escape() {
        let (keyboard, keyboard_far) = pair();
        let (line, vm) = pair();
        let mut vm = File::from(vm);
        vm.write_all(b"login: ").unwrap();
        File::from(keyboard_far.try_clone().unwrap())
            .write_all(b"root\r~.ignored")
            .unwrap();
        let mut shown = Vec::new();
        let end = relay(keyboard.as_fd(), line.as_fd(), &mut shown, None).unwrap();
        assert_eq!(end, End::Escape);
        assert_eq!(shown, b"login: ");
        drop(line);
        let mut typed = Vec::new();
        vm.read_to_end(&mut typed).unwrap();
        assert_eq!(typed, b"root\r");
    }

    #[test]
    fn relay_ends_when_the_vm_side_closes() {
        let (keyboard, _keyboard_far) = pair();
        let (line, vm) = pair();
        File::from(vm).write_all(b"bye\r\n").unwrap();
        let mut shown = Vec::new();
        let end = relay(keyboard.as_fd(), line.as_fd(), &mut shown, None).unwrap();
        assert_eq!(end, End::LineClosed);
        assert_eq!(shown, b"bye\r\n");
    }

    #[test]
    fn relay_ends_at_end_of_input() {
        let (keyboard, keyboard_far) = pair();
        let (line, _vm) = pair();
        drop(keyboard_far);
        let mut shown = Vec::new();
        let end = relay(keyboard.as_fd(), line.as_fd(), &mut shown, None).unwrap();
        assert_eq!(end, End::InputClosed);
    }

    #[test]
    fn relay_ends_on_the_signal_descriptor() {
        let (keyboard, _k) = pair();
        let (line, _vm) = pair();
        let (sig, sig_far) = pair();
        File::from(sig_far).write_all(b"!").unwrap();
        let mut shown = Vec::new();
        let end = relay(
            keyboard.as_fd(),
            line.as_fd(),
            &mut shown,
            Some(sig.as_fd()),
        )
        .unwrap();
        assert_eq!(end, End::Signal);
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        assert!(before.local_flags.contains(termios::LocalFlags::ICANON));
        {
            let _raw = RawMode::enable(pty.slave.as_fd(), None).unwrap().unwrap();
            let during = termios::tcgetattr(pty.slave.as_fd()).unwrap();
            assert!(!during.local_flags.contains(termios::LocalFlags::ICANON));
            assert!(!during.local_flags.contains(termios::LocalFlags::ECHO));
        }
        let after = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
    }

    #[test]
    fn raw_mode_on_a_non_terminal_is_nothing() {
        let (a, _b) = pair();
        assert!(RawMode::enable(a.as_fd(), None).unwrap().is_none());
    }

    #[test]
    fn opening_a_missing_tty_names_it() {
        let err = run(Path::new("/dev/pts/no-such-pty")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to open the console: /dev/pts/no-such-pty: No such file or directory"
        );
    }
}
