//! The connection to vmd's control socket (the imsg plumbing of vmctl's
//! `vmmaction` in `main.c`): one `SOCK_SEQPACKET` packet per message, one
//! response per request.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno as NixErrno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use proto::{FrameError, Request, Response, MAX_FRAME};

use crate::errno::Errno;

/// Where vmd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/vmd.sock";

/// Why talking to the daemon failed; the texts are vmctl's.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be created
    #[error("socket: {0}")]
    Socket(Errno),
    /// Nobody listens at the socket path
    #[error("connect: {}: {err}", .path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        err: Errno,
    },
    /// Sending the request failed
    #[error("write error: {0}")]
    Write(Errno),
    /// Reading the response failed
    #[error("imsg_read error: {0}")]
    Read(Errno),
    /// The daemon closed the connection before answering
    #[error("pipe closed")]
    Closed,
    /// The response is not a message of this protocol version
    #[error("invalid response from vmd: {0}")]
    Frame(#[from] FrameError),
}

/// Sends requests and reads their responses. The daemon's socket in real
/// use, a script in tests.
pub trait Transport {
    /// Sends one request and waits for its response.
    fn call(&mut self, request: &Request) -> Result<Response, ClientError>;
}

/// A connection to vmd's control socket.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| ClientError::Socket(Errno(e as i32)))?;
        let connect_err = |e: NixErrno| ClientError::Connect {
            path: path.to_path_buf(),
            err: Errno(e as i32),
        };
        let addr = UnixAddr::new(path).map_err(connect_err)?;
        loop {
            match socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(NixErrno::EINTR) => continue,
                Err(e) => return Err(connect_err(e)),
            }
        }
        Ok(Client {
            fd,
            // One byte more than the largest packet tells an oversized
            // packet from a full one.
            buf: vec![0; MAX_FRAME + 1],
        })
    }
}

impl Transport for Client {
    fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let packet = proto::encode(request)?;
        loop {
            match socket::send(self.fd.as_raw_fd(), &packet, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => break,
                Err(NixErrno::EINTR) => continue,
                Err(NixErrno::EPIPE | NixErrno::ECONNRESET) => return Err(ClientError::Closed),
                Err(e) => return Err(ClientError::Write(Errno(e as i32))),
            }
        }
        let len = loop {
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(len) => break len,
                Err(NixErrno::EINTR) => continue,
                Err(NixErrno::ECONNRESET) => return Err(ClientError::Closed),
                Err(e) => return Err(ClientError::Read(Errno(e as i32))),
            }
        };
        Ok(proto::decode(&self.buf[..len])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn missing_socket_is_reported_like_vmctl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmd.sock");
        let err = Client::connect(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("connect: {}: No such file or directory", path.display())
        );
    }

    #[test]
    fn socket_of_another_type_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dgram.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let err = Client::connect(&path).unwrap_err();
        assert!(err.to_string().starts_with("connect: "), "{err}");
    }

    /// A one-shot server: accepts one client, answers each packet with
    /// the given bytes.
    fn serve(path: &Path, answers: Vec<Vec<u8>>) -> std::thread::JoinHandle<Vec<Request>> {
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(listener.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
        socket::listen(&listener, socket::Backlog::new(1).unwrap()).unwrap();
        std::thread::spawn(move || {
            let conn = socket::accept(listener.as_raw_fd()).unwrap();
            // SAFETY: accept returned a new descriptor that nothing else owns.
            let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
            let mut seen = Vec::new();
            let mut buf = vec![0u8; MAX_FRAME];
            for answer in answers {
                let len = socket::recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                seen.push(proto::decode(&buf[..len]).unwrap());
                socket::send(conn.as_raw_fd(), &answer, MsgFlags::empty()).unwrap();
            }
            seen
        })
    }

    #[test]
    fn request_and_response_travel_as_packets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmd.sock");
        let answers = vec![
            proto::encode(&Response::Paused { id: 3 }).unwrap(),
            proto::encode(&Response::Ok).unwrap(),
        ];
        let server = serve(&path, answers);
        let mut client = Client::connect(&path).unwrap();
        let pause = Request::Pause(proto::VmTarget::Name("web".into()));
        assert_eq!(client.call(&pause).unwrap(), Response::Paused { id: 3 });
        assert_eq!(client.call(&Request::Reload).unwrap(), Response::Ok);
        assert_eq!(server.join().unwrap(), vec![pause, Request::Reload]);
    }

    #[test]
    fn garbage_and_closed_connections_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmd.sock");
        let server = serve(&path, vec![vec![proto::VERSION, 0xff, 0xff]]);
        let mut client = Client::connect(&path).unwrap();
        let err = client.call(&Request::Reload).unwrap_err();
        assert!(matches!(err, ClientError::Frame(_)), "{err}");
        server.join().unwrap();
        // The server thread is gone and its socket closed.
        let err = client.call(&Request::Reload).unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err}");
        assert_eq!(err.to_string(), "pipe closed");
    }
}
