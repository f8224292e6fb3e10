//! The real vmctl against the real vmd: a daemon on a temporary socket,
//! driven only through the vmctl binary, checking what vmctl prints and
//! its exit status. Needs root for the daemon (skipped otherwise); the
//! vmd binary is taken from the same target directory, built if missing.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HEADER: &str = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
struct Vmd {
    dir: tempfile::TempDir,
    sock: PathBuf,
    child: Option<Child>,
}

impl Vmd {
    fn start(conf: &str) -> Vmd {
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
            .arg("-d")
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vmd.log")).unwrap_or_default()
    }

    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmctl"));
        cmd.env("VMD_SOCKET", &self.sock);
        cmd
    }

    fn vmctl(&self, args: &[&str]) -> Output {
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stopped config VM "cfg1" with 64M and a kernel file.
fn conf_with_stopped_vm(dir: &Path) -> String {
    let kernel = dir.join("kernel");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    format!(
        "vm \"cfg1\" {{\n  disable\n  boot \"{}\"\n  memory 64M\n}}\n",
        kernel.display()
    )
}

#[test]
fn status_of_an_empty_daemon_is_the_header_and_fails() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let out = vmd.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), HEADER);
    assert_eq!(stderr(&out), "");
}

#[test]
fn config_vm_rows_and_stop_errors() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let vmd = Vmd::start(&conf_with_stopped_vm(tmp.path()));

    let out = vmd.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{HEADER}    1     -     1   64.0M       -       -         root  stopped cfg1\n")
    );
    let out = vmd.vmctl(&["show", "-r"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );
    let out = vmd.vmctl(&["status", "--json", "cfg1"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "cfg1");
    assert_eq!(json[0]["max_mem"], 64 << 20);
    assert_eq!(json[0]["state"], "stopped");
    let out = vmd.vmctl(&["status", "nosuch"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );

    let out = vmd.vmctl(&["stop", "cfg1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "stopping vm cfg1: cannot stop vm that is not running\n"
    );
    let out = vmd.vmctl(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "stopping vm nosuch: vm not found\n");
    let out = vmd.vmctl(&["stop", "-a"]);
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
    let out = vmd.vmctl(&["pause", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: pause vm command failed: No such file or directory\n"
    );
    let out = vmd.vmctl(&["console", "cfg1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: console not found\n");
}

#[test]
fn start_errors_come_back_in_vmctls_words() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let out = vmd.vmctl(&["start", "-t", "nosuch", "copy"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: invalid template\n");

    // Missing files are caught by vmctl itself before the daemon.
    let disk = vmd.dir.path().join("disk.img");
    let out = vmd.vmctl(&["start", "-d", disk.to_str().unwrap(), "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: invalid disk path: No such file or directory\n"
    );
}

#[test]
fn load_reload_reset_and_log_for_root() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    vmd.file(
        "extra.conf",
        conf_with_stopped_vm(vmd.dir.path()).as_bytes(),
    );
    let out = vmd
        .command()
        .current_dir(vmd.dir.path())
        .args(["load", "extra.conf"])
        .output()
        .unwrap();
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
    assert_eq!(vmd.vmctl(&["status", "cfg1"]).status.code(), Some(0));

    let broken = vmd.file("broken.conf", b"vm {\n");
    let out = vmd.vmctl(&["load", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: command failed: Invalid argument\n");

    for args in [&["log", "verbose"][..], &["log", "brief"], &["reload"]] {
        let out = vmd.vmctl(args);
        assert_eq!(
            (out.status.code(), stderr(&out)),
            (Some(0), String::new()),
            "{args:?}"
        );
    }
    let out = vmd.vmctl(&["reset", "vms"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        vmd.vmctl(&["status"]).status.code(),
        Some(1),
        "reset forgot the VMs"
    );
}

/// A throwaway user, removed when dropped.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn create() -> User {
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

#[test]
fn root_only_commands_are_refused_to_other_users() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    std::fs::set_permissions(&vmd.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let user = User::create();
    let as_user = |args: &[&str]| {
        vmd.command()
            .uid(user.uid)
            .gid(user.gid)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["reload"][..],
        &["load", "/etc/vm.conf"],
        &["reset"],
        &["log", "verbose"],
    ] {
        let out = as_user(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "vmctl: command failed: Operation not permitted\n",
            "{args:?}"
        );
    }
    // Listing is for everyone.
    let out = as_user(&["status"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );
}
