//! Test harness: a real `vmd -d -f CONF -s SOCK` in a temporary directory,
//! clients speaking the protocol, throwaway users.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use privsep::Channel;
use proto::{Request, Response};

/// The vmd binary under test.
pub fn vmd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmd"))
}

/// True when the tests run as root (the daemon needs it).
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip("needs root");
    }
    root
}
/// A test whose precondition is missing is skipped loudly, except under CI
/// (`CI` set), where root and `/dev/kvm` are guaranteed: there a skip would
/// let the test pass without running, so it fails instead.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {why}"
    );
    eprintln!("skipped: {why}");
}

/// A running daemon, stopped (SIGTERM) when dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub sock: PathBuf,
    pub conf: PathBuf,
}

impl Daemon {
    /// Starts vmd with `conf` as its vm.conf and waits for its socket.
    pub fn start(conf: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("vmdtest")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf_path = dir.path().join("vm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let sock = dir.path().join("vmd.sock");
        let log = std::fs::File::create(dir.path().join("vmd.log")).unwrap();
        let child = Command::new(vmd_bin())
            .arg("-dv")
            .arg("-f")
            .arg(&conf_path)
            .arg("-s")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir,
            child: Some(child),
            sock,
            conf: conf_path,
        };
        d.wait_for_socket();
        d
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // Up means: a status round trip works and both children have
            // exec'd into their roles.
            let answered = Channel::connect(&self.sock).is_ok_and(|mut c| {
                c.send(&Request::Status { target: None }, &[]).is_ok()
                    && c.recv_msg::<Response>().is_ok()
            });
            let roles = self.children();
            if answered
                && roles.iter().any(|(_, c)| c.starts_with("vmd: control"))
                && roles.iter().any(|(_, c)| c.starts_with("vmd: vmm"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("vmd did not come up; log:\n{}", self.log());
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vmd.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// A new client connection.
    pub fn client(&self) -> Channel {
        Channel::connect(&self.sock).unwrap()
    }

    /// One request on a fresh connection, its response.
    pub fn request(&self, req: &Request) -> Response {
        let mut c = self.client();
        c.send(req, &[]).unwrap();
        c.recv_msg::<Response>()
            .unwrap_or_else(|e| panic!("{req:?}: {e}; log:\n{}", self.log()))
    }

    /// Lets every user reach the socket (the test users are not in the
    /// socket's group).
    pub fn open_socket_to_all(&self) {
        std::fs::set_permissions(&self.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    }

    /// Writes a file in the daemon's directory.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the daemon to exit (up to 30 s), returning its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vmd did not exit; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Pids of the daemon's direct children, with their argv[0].
    pub fn children(&self) -> Vec<(i32, String)> {
        children_of(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Direct children of `pid` with their command lines.
pub fn children_of(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: i32 = after
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == pid {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((p, cmd));
        }
    }
    out
}

/// The real uid of a process.
pub fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap()
}

/// A throwaway user, deleted when dropped.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates user `vt<pid><tag>` (unique per test process).
    pub fn create(tag: &str) -> TestUser {
        let name = format!("vt{}{}", std::process::id(), tag);
        for _ in 0..200 {
            let out = Command::new("useradd")
                .args(["-M", "-U", "-s", "/usr/sbin/nologin", &name])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            // Another test holds the password file lock.
            std::thread::sleep(Duration::from_millis(50));
        }
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap_or_else(|| panic!("useradd {name} failed"));
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// A command run as this user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid).gid(self.gid);
        c
    }

    /// Sends one request to `sock` as this user; the response.
    pub fn request(&self, sock: &Path, req: &Request) -> Response {
        let packet = proto::encode(req).unwrap();
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        let out = self
            .command("python3")
            .arg("-c")
            .arg(PY_CLIENT)
            .arg(sock)
            .arg(hex)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client as {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let bytes: Vec<u8> = (0..text.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text.trim()[i..i + 2], 16).unwrap())
            .collect();
        proto::decode(&bytes).unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..200 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok
                || nix::unistd::User::from_name(&self.name)
                    .ok()
                    .flatten()
                    .is_none()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A minimal client: one packet out, one packet back, as hex.
const PY_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(bytes.fromhex(sys.argv[2]))
print(s.recv(1 << 20).hex())
"#;
