//! A stand-in for vmd's control socket: answers each request with the
//! next scripted response and records what it was asked, so the real
//! vmctl binary can be run end to end without a daemon.

#![allow(dead_code)]

pub mod guest;
pub mod vmd;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};
use proto::{Request, Response, MAX_FRAME};

/// The vmctl binary under test.
pub fn vmctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmctl"))
}

/// A scripted daemon listening on a socket in its own directory.
pub struct FakeVmd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    thread: Option<JoinHandle<Vec<Request>>>,
}

impl FakeVmd {
    /// Listens, accepts one client and answers its requests in order.
    pub fn start(answers: Vec<Response>) -> FakeVmd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vmd.sock");
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(listener.as_raw_fd(), &UnixAddr::new(&socket).unwrap()).unwrap();
        socket::listen(&listener, Backlog::new(4).unwrap()).unwrap();
        let thread = std::thread::spawn(move || serve(&listener, answers));
        FakeVmd {
            dir,
            socket,
            thread: Some(thread),
        }
    }

    /// The requests the client sent (waits for the script to finish).
    pub fn requests(mut self) -> Vec<Request> {
        self.thread.take().unwrap().join().unwrap()
    }

    /// `vmctl -s SOCKET args...`, run to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        vmctl()
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

fn serve(listener: &OwnedFd, answers: Vec<Response>) -> Vec<Request> {
    let mut asked = Vec::new();
    if answers.is_empty() {
        return asked;
    }
    let fd = socket::accept(listener.as_raw_fd()).unwrap();
    // SAFETY: accept returned a new descriptor owned by nobody else.
    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = vec![0u8; MAX_FRAME];
    for answer in answers {
        let len = match socket::recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => break,
            Ok(len) => len,
        };
        asked.push(proto::decode(&buf[..len]).unwrap());
        let packet = proto::encode(&answer).unwrap();
        socket::send(conn.as_raw_fd(), &packet, MsgFlags::MSG_NOSIGNAL).unwrap();
    }
    asked
}

/// A socket path where nobody listens.
pub fn nowhere(dir: &Path) -> PathBuf {
    dir.join("absent.sock")
}
