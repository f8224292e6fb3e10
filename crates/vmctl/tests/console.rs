//! `vmctl console` and `vmctl start -c` end to end: the real binary runs on
//! a pseudo-terminal of its own and attaches to another pty standing for
//! the VM's serial line; a scripted control socket hands out its name.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{vmctl, FakeVmd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::termios::{tcgetattr, LocalFlags};
use proto::{Request, Response, VmTarget};

/// A safety net so a broken console fails the test instead of hanging it;
/// no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A pty pair: the master we drive, the slave the other side uses.
struct Pty {
    master: File,
    slave: OwnedFd,
    name: String,
}

fn pty() -> Pty {
    let pair = openpty(None, None).unwrap();
    // openpty(3) does not set close-on-exec: without it vmctl would
    // inherit the VM's side and never see it hang up.
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let name = nix::unistd::ttyname(&pair.slave)
        .unwrap()
        .display()
        .to_string();
    Pty {
        master: File::from(pair.master),
        slave: pair.slave,
        name,
    }
}

/// Reads from `from` until `want` has been seen; returns all bytes read.
fn read_until(from: &mut File, want: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(want.len()).any(|w| w == want) {
        assert!(
            Instant::now() < deadline,
            "never saw {:?}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            // EIO: the slave side is closed; nothing more will come.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        seen.windows(want.len()).any(|w| w == want),
        "never saw {:?}; got {:?}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(&seen)
    );
    seen
}

fn wait(child: &mut Child) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmctl did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `vmctl -s SOCKET args` with the user's pty as its terminal.
fn spawn_on(user: &Pty, vmd: &FakeVmd, args: &[&str]) -> Child {
    let stdio = || Stdio::from(user.slave.try_clone().unwrap());
    vmctl()
        .arg("-s")
        .arg(&vmd.socket)
        .args(args)
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap()
}

fn canonical(user: &Pty) -> bool {
    tcgetattr(user.slave.as_fd())
        .unwrap()
        .local_flags
        .contains(LocalFlags::ICANON)
}

#[test]
fn console_shows_guest_output_sends_keys_and_leaves_on_tilde_dot() {
    let mut vm = pty();
    let mut user = pty();
    let vmd = FakeVmd::start(vec![Response::Console {
        id: 1,
        tty: vm.name.clone(),
    }]);
    assert!(canonical(&user));
    let mut child = spawn_on(&user, &vmd, &["console", "web"]);

    read_until(
        &mut user.master,
        format!("Connected to {} (speed 115200)\r\n", vm.name).as_bytes(),
    );
    assert!(
        !canonical(&user),
        "the user's terminal is raw while attached"
    );

    vm.master.write_all(b"guest says hello\r\n").unwrap();
    read_until(&mut user.master, b"guest says hello\r\n");

    user.master.write_all(b"uname\r").unwrap();
    read_until(&mut vm.master, b"uname\r");

    // "~." in the middle of a line is text; after a newline it leaves.
    user.master.write_all(b"echo ~.\r").unwrap();
    read_until(&mut vm.master, b"echo ~.\r");
    user.master.write_all(b"~.").unwrap();

    assert_eq!(wait(&mut child), 0);
    read_until(&mut user.master, b"\r\n[EOT]\r\n");
    assert!(canonical(&user), "the terminal is restored");
    assert_eq!(
        vmd.requests(),
        [Request::Console(VmTarget::Name("web".into()))]
    );
}

#[test]
fn console_ends_when_the_vm_hangs_up_and_restores_the_terminal() {
    let mut vm = pty();
    let mut user = pty();
    let vmd = FakeVmd::start(vec![Response::Console {
        id: 2,
        tty: vm.name.clone(),
    }]);
    let mut child = spawn_on(&user, &vmd, &["console", "2"]);
    read_until(&mut user.master, b"Connected to ");
    vm.master.write_all(b"reboot: Power down\r\n").unwrap();
    read_until(&mut user.master, b"Power down\r\n");
    // The VM process exits: its side of the pty closes.
    drop(vm.master);
    drop(vm.slave);
    assert_eq!(wait(&mut child), 0);
    read_until(&mut user.master, b"[EOT]");
    assert!(canonical(&user));
}

#[test]
fn console_leaves_cleanly_on_sigterm() {
    let vm = pty();
    let mut user = pty();
    let vmd = FakeVmd::start(vec![Response::Console {
        id: 3,
        tty: vm.name.clone(),
    }]);
    let mut child = spawn_on(&user, &vmd, &["console", "3"]);
    read_until(&mut user.master, b"Connected to ");
    assert!(!canonical(&user));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait(&mut child), 0);
    read_until(&mut user.master, b"[EOT]");
    assert!(canonical(&user), "the terminal is restored after a signal");
}

#[test]
fn start_with_c_attaches_without_the_started_line() {
    let mut vm = pty();
    let mut user = pty();
    let vmd = FakeVmd::start(vec![Response::StartOk {
        id: 7,
        tty: vm.name.clone(),
    }]);
    let mut child = spawn_on(&user, &vmd, &["start", "-c", "web"]);
    let seen = read_until(&mut user.master, b"Connected to ");
    assert!(!String::from_utf8_lossy(&seen).contains("started vm"));
    vm.master.write_all(b"boot\r\n").unwrap();
    read_until(&mut user.master, b"boot\r\n");
    user.master.write_all(b"\r~.").unwrap();
    assert_eq!(wait(&mut child), 0);
    assert!(canonical(&user));
}

#[test]
fn console_of_an_unknown_vm_fails() {
    let vmd = FakeVmd::start(vec![Response::Error { code: libc::ENOENT }]);
    let out = vmd.run(&["console", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vmctl: console not found\n"
    );
}
