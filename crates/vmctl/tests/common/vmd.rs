//! A real vmd on a temporary socket for tests that drive it with the
//! vmctl binary; throwaway users; small helpers for outputs.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The status header line vmctl prints.
pub const HEADER: &str = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n";

/// Whether the tests run as root (vmd needs it).
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

/// The vmd binary next to vmctl's, built with the same profile if it is
/// not there yet.
fn vmd_binary() -> PathBuf {
    let vmctl = PathBuf::from(env!("CARGO_BIN_EXE_vmctl"));
    let profile_dir = vmctl.parent().unwrap();
    let vmd = profile_dir.join("vmd");
    if !vmd.exists() {
        let target_dir = profile_dir.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-j2", "-p", "vmd", "--bin", "vmd", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building vmd failed");
    }
    vmd
}

/// A vmd in its own directory, stopped when dropped.
pub struct Vmd {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl Vmd {
    pub fn start(conf: &str) -> Vmd {
        let dir = tempfile::Builder::new()
            .prefix("vmctltest")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf_path = dir.path().join("vm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let sock = dir.path().join("vmd.sock");
        let log = std::fs::File::create(dir.path().join("vmd.log")).unwrap();
        let child = Command::new(vmd_binary())
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
        let vmd = Vmd {
            dir,
            sock,
            child: Some(child),
        };
        // Up when a status round trip works (exit 0 or 1 with the header).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = vmd.vmctl(&["status"]);
            if String::from_utf8_lossy(&out.stdout).starts_with(HEADER) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "vmd did not come up:\n{}",
                vmd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vmd.log")).unwrap_or_default()
    }

    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmctl"));
        cmd.env("VMD_SOCKET", &self.sock);
        cmd
    }

    pub fn vmctl(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }
}

impl Drop for Vmd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway user, removed when dropped.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn create() -> User {
        let name = format!("vc{}", std::process::id());
        for _ in 0..200 {
            let ok = Command::new("useradd")
                .args(["-M", "-U", "-s", "/usr/sbin/nologin", &name])
                .status()
                .unwrap()
                .success();
            if ok {
                break;
            }
            // Another test holds the password database lock.
            std::thread::sleep(Duration::from_millis(50));
        }
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("useradd failed");
        User {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }
}

impl User {
    /// A command that runs as this user, without supplementary groups.
    pub fn command_for(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.uid(self.uid).gid(self.gid);
        cmd
    }
}

impl Drop for User {
    fn drop(&mut self) {
        for _ in 0..200 {
            let gone = Command::new("userdel")
                .arg(&self.name)
                .status()
                .is_ok_and(|s| s.success());
            if gone
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
