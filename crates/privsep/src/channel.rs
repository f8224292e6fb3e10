//! A message channel over a `SOCK_SEQPACKET` Unix socket: one message per
//! packet, encoded by [`proto::frame`], descriptors as `SCM_RIGHTS` (the
//! part of vmd's `proc.c` and libutil's imsg that moves bytes and fds).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use proto::frame::{FrameError, MAX_FDS, MAX_FRAME};
use proto::internal::FdCount;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket call failed
    #[error("socket I/O failed")]
    Io(#[from] Errno),
    /// The packet is not a valid message
    #[error("invalid message")]
    Frame(#[from] FrameError),
    /// The packet or its descriptors did not fit the receive buffers
    #[error("message truncated")]
    Truncated,
    /// The message came with the wrong number of descriptors
    #[error("message carries {got} descriptors, expected {expected}")]
    FdCount {
        /// What the message says it carries.
        expected: usize,
        /// What came with it.
        got: usize,
    },
    /// The peer closed the channel
    #[error("peer closed the channel")]
    Closed,
}

impl ChannelError {
    /// True when a non-blocking socket simply had nothing to read or no
    /// room to write.
    pub fn would_block(&self) -> bool {
        matches!(self, ChannelError::Io(Errno::EAGAIN))
    }
}

/// One end of a message channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Channel {
    /// Wraps a connected `SOCK_SEQPACKET` socket.
    pub fn new(fd: OwnedFd) -> Self {
        Channel {
            fd,
            buf: Vec::new(),
        }
    }

    /// A connected pair of channels (both close-on-exec).
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::new(a), Channel::new(b)))
    }

    /// Connects to the listening socket at `path` (vmctl → the control
    /// socket).
    pub fn connect(path: &Path) -> Result<Channel, ChannelError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        socket::connect(fd.as_raw_fd(), &addr)?;
        Ok(Channel::new(fd))
    }

    /// Makes reads and writes return `EAGAIN` instead of blocking.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), ChannelError> {
        set_nonblocking(self.fd.as_fd(), on)
    }

    /// Sends `msg` with `fds`, whose number must match the message's
    /// [`FdCount`].
    pub fn send<T: Serialize + FdCount>(
        &self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        if fds.len() != msg.fd_count() {
            return Err(ChannelError::FdCount {
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        let packet = proto::frame::encode(msg)?;
        self.send_packet(&packet, fds)
    }

    /// Sends one raw packet (tests use it to send garbage).
    pub fn send_packet(&self, packet: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        if fds.len() > MAX_FDS {
            return Err(ChannelError::FdCount {
                expected: MAX_FDS,
                got: fds.len(),
            });
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        let iov = [IoSlice::new(packet)];
        loop {
            match socket::sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message and its descriptors. [`ChannelError::Closed`]
    /// when the peer has gone.
    pub fn recv<T: DeserializeOwned + FdCount>(
        &mut self,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let (len, fds) = self.recv_packet()?;
        let msg: T = proto::frame::decode(&self.buf[..len])?;
        if msg.fd_count() != fds.len() {
            return Err(ChannelError::FdCount {
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        Ok((msg, fds))
    }

    /// Receives one message that carries no descriptors.
    pub fn recv_msg<T: DeserializeOwned + FdCount>(&mut self) -> Result<T, ChannelError> {
        self.recv().map(|(msg, _)| msg)
    }

    /// Receives one raw packet into the channel's buffer; returns its
    /// length and the descriptors that came with it.
    fn recv_packet(&mut self) -> Result<(usize, Vec<OwnedFd>), ChannelError> {
        // Size the buffer to the waiting packet (MSG_PEEK | MSG_TRUNC tells
        // its length), at most one byte more than the largest frame so a
        // larger packet shows up as truncated. Small packets keep the
        // buffer small: a control process with hundreds of clients does
        // not hold a maximal buffer for each.
        let mut probe = [0u8; 1];
        let waiting = loop {
            match socket::recv(
                self.fd.as_raw_fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        let size = waiting.clamp(1, MAX_FRAME + 1);
        if self.buf.len() > 4096 && size <= 4096 {
            self.buf = Vec::new();
        }
        self.buf.resize(size.max(self.buf.len()), 0);
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let (bytes, flags, fds) = loop {
            match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            for fd in raw {
                                // SAFETY: the kernel just installed this
                                // descriptor in our table for us; nothing
                                // else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(ChannelError::Truncated);
        }
        if bytes == 0 {
            // A seqpacket peer that closed reads as an empty packet; an
            // empty packet is never a valid message either.
            return Err(ChannelError::Closed);
        }
        Ok((bytes, fds))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.fd
    }
}

/// A listening `SOCK_SEQPACKET` socket (the control socket).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Binds and listens at `path`, removing a stale socket file first.
    pub fn bind(path: &Path) -> Result<Listener, ChannelError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if is_socket(&meta) => {
                let _ = std::fs::remove_file(path);
            }
            _ => {}
        }
        let addr = UnixAddr::new(path)?;
        socket::bind(fd.as_raw_fd(), &addr)?;
        socket::listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
        Ok(Listener { fd })
    }

    /// Wraps an inherited listening socket.
    pub fn from_fd(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    /// Makes `accept` return `EAGAIN` instead of blocking.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), ChannelError> {
        set_nonblocking(self.fd.as_fd(), on)
    }

    /// Accepts one client (close-on-exec, non-blocking).
    pub fn accept(&self) -> Result<Channel, ChannelError> {
        let fd = loop {
            match socket::accept4(
                self.fd.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => break fd,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Ok(Channel::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), ChannelError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// The credentials the kernel recorded for the peer of a connected Unix
/// socket (`SO_PEERCRED`): the only identity the daemon trusts.
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<proto::internal::PeerCred, ChannelError> {
    let cred = socket::getsockopt(&fd, socket::sockopt::PeerCredentials)?;
    Ok(proto::internal::PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::{Request, Response, VmTarget};
    use proto::internal::{ParentToVmm, VmSpec};
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_cross_a_pair() {
        let (a, mut b) = Channel::pair().unwrap();
        a.send(&Request::Pause(VmTarget::Id(4)), &[]).unwrap();
        let (req, fds): (Request, _) = b.recv().unwrap();
        assert_eq!(req, Request::Pause(VmTarget::Id(4)));
        assert!(fds.is_empty());
    }

    #[test]
    fn descriptors_travel_with_the_message() {
        let (a, mut b) = Channel::pair().unwrap();
        let mut tty = tempfile::tempfile().unwrap();
        tty.write_all(b"tty").unwrap();
        let mut kernel = tempfile::tempfile().unwrap();
        kernel.write_all(b"kernel").unwrap();
        let spec = VmSpec {
            id: 1,
            name: "a".into(),
            memory: 1 << 20,
            vcpus: 1,
            cmdline: String::new(),
            initrd: false,
            disks: 0,
            cdrom: false,
        };
        a.send(&ParentToVmm::Start(spec), &[tty.as_fd(), kernel.as_fd()])
            .unwrap();
        let (msg, fds): (ParentToVmm, _) = b.recv().unwrap();
        assert!(matches!(msg, ParentToVmm::Start(_)));
        assert_eq!(fds.len(), 2);
        let mut got = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "kernel");
    }

    #[test]
    fn wrong_descriptor_count_is_refused_on_both_ends() {
        let (a, mut b) = Channel::pair().unwrap();
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            a.send(&Request::Reload, &[f.as_fd()]),
            Err(ChannelError::FdCount { .. })
        ));
        // Smuggled past the sender check: the receiver refuses it.
        let packet = proto::frame::encode(&Request::Reload).unwrap();
        a.send_packet(&packet, &[f.as_fd()]).unwrap();
        assert!(matches!(
            b.recv::<Request>(),
            Err(ChannelError::FdCount {
                expected: 0,
                got: 1
            })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (a, mut b) = Channel::pair().unwrap();
        a.send_packet(&[proto::VERSION, 0xff, 0xff, 0xff], &[])
            .unwrap();
        assert!(matches!(b.recv::<Request>(), Err(ChannelError::Frame(_))));
        a.send_packet(&[9, 0], &[]).unwrap();
        assert!(matches!(
            b.recv::<Request>(),
            Err(ChannelError::Frame(FrameError::Version { found: 9 }))
        ));
    }

    #[test]
    fn oversized_packet_is_truncated() {
        let (a, mut b) = Channel::pair().unwrap();
        socket::setsockopt(&a.fd, socket::sockopt::SndBuf, &(4 * MAX_FRAME)).unwrap();
        socket::setsockopt(&b.fd, socket::sockopt::RcvBuf, &(4 * MAX_FRAME)).unwrap();
        let big = vec![proto::VERSION; MAX_FRAME + 100];
        a.send_packet(&big, &[]).unwrap();
        assert!(matches!(b.recv::<Request>(), Err(ChannelError::Truncated)));
    }

    #[test]
    fn closed_peer_reads_as_closed() {
        let (a, mut b) = Channel::pair().unwrap();
        drop(a);
        assert!(matches!(b.recv::<Response>(), Err(ChannelError::Closed)));
    }

    #[test]
    fn listener_accepts_and_reports_peer_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&path).unwrap();
        let c = Channel::connect(&path).unwrap();
        let mut s = l.accept().unwrap();
        let cred = peer_cred(s.as_fd()).unwrap();
        assert_eq!(cred.uid, nix::unistd::getuid().as_raw());
        assert_eq!(cred.pid, std::process::id() as i32);
        c.send(&Request::Reload, &[]).unwrap();
        s.set_nonblocking(false).unwrap();
        assert_eq!(s.recv_msg::<Request>().unwrap(), Request::Reload);
        // Binding again over the stale socket file works.
        drop(l);
        Listener::bind(&path).unwrap();
    }

    #[test]
    fn nonblocking_read_with_nothing_pending_would_block() {
        let (_a, mut b) = Channel::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let err = b.recv::<Request>().unwrap_err();
        assert!(err.would_block());
    }
}
