//! A tiny guest of our own on this machine's /dev/kvm, started, listed,
//! attached to, paused and stopped through the real vmd with the real
//! vmctl. Needs root (skipped otherwise).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::guest::echo_guest;
use common::vmd::{is_root, stderr, stdout, User, Vmd, HEADER};

/// The whitespace-separated columns of the status row of `name`.
fn status_row(vmd: &Vmd, name: &str) -> Vec<String> {
    let out = vmd.vmctl(&["status", name]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        vmd.log()
    );
    let text = stdout(&out);
    let row = text.lines().nth(1).unwrap_or_default();
    row.split_whitespace().map(str::to_string).collect()
}

/// Reads from a pty master until `want` shows up (or the safety net of a
/// minute runs out); returns what was read.
fn read_until(from: &mut std::fs::File, want: &[u8]) -> Vec<u8> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    use std::os::fd::AsFd;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !seen.windows(want.len()).any(|w| w == want) && Instant::now() < deadline {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
            continue;
        }
        match from.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
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

/// Runs `console` (a `vmctl console` command) on a pty of its own, checks
/// that it attaches to `tty`, that the echo guest returns what is typed,
/// and that `~.` leaves with status 0.
fn echo_through_console(mut console: std::process::Command, tty: &str) {
    use std::io::Write;
    let pty = nix::pty::openpty(None, None).unwrap();
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let mut user = std::fs::File::from(pty.master);
    let stdio = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut console = console
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap();
    read_until(
        &mut user,
        format!("Connected to {tty} (speed 115200)\r\n").as_bytes(),
    );
    user.write_all(b"ping").unwrap();
    read_until(&mut user, b"ping");
    user.write_all(b"\r~.").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = console.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vmctl console did not leave");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    read_until(&mut user, b"[EOT]");
}

/// The tty named by "vmctl: started vm ID successfully, tty TTY".
fn started_tty(err: &str, id: u32) -> String {
    err.strip_prefix(&format!("vmctl: started vm {id} successfully, tty "))
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{err}"))
        .to_string()
}

#[test]
fn tiny_guest_lifecycle_through_vmctl() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let kernel = vmd.file("tiny.elf", &echo_guest());

    let out = vmd.vmctl(&["start", "-b", kernel.to_str().unwrap(), "-m", "32M", "tiny"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", vmd.log());
    let tty = started_tty(&err, 1);
    assert!(tty.starts_with("/dev/pts/"), "{tty}");

    let row = status_row(&vmd, "tiny");
    assert_eq!(row.len(), 9, "{row:?}");
    assert_eq!(row[0], "1");
    assert!(row[1].parse::<u32>().is_ok(), "pid column {row:?}");
    assert_eq!(
        &row[2..],
        [
            "1",
            "32.0M",
            "32.0M",
            &tty["/dev/".len()..],
            "root",
            "running",
            "tiny"
        ]
    );

    let out = vmd.vmctl(&["start", "tiny"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation already in progress\n"
    );

    // The console: the guest echoes what is typed; "~." leaves.
    let mut console = vmd.command();
    console.args(["console", "tiny"]);
    echo_through_console(console, &tty);

    let out = vmd.vmctl(&["pause", "tiny"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(0), "vmctl: paused vm 1 successfully\n".to_string())
    );
    assert_eq!(status_row(&vmd, "tiny")[7], "paused");
    let out = vmd.vmctl(&["unpause", "1"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (Some(0), "vmctl: unpaused vm 1 successfully\n".to_string())
    );
    assert_eq!(status_row(&vmd, "tiny")[7], "running");

    // Another user may neither attach to, stop nor pause root's VM.
    std::fs::set_permissions(&vmd.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let other = User::create();
    let as_other = |args: &[&str]| {
        vmd.command()
            .uid(other.uid)
            .gid(other.gid)
            .args(args)
            .output()
            .unwrap()
    };
    let refusals: [(&[&str], &str); 3] = [
        (
            &["console", "tiny"],
            "vmctl: failed to open the console: Operation not permitted\n",
        ),
        (
            &["stop", "-f", "tiny"],
            "stopping vm tiny: failed: Operation not permitted\n",
        ),
        (
            &["pause", "1"],
            "vmctl: pause vm command failed: Operation not permitted\n",
        ),
    ];
    for (args, message) in refusals {
        let out = as_other(args);
        assert_eq!(
            (out.status.code(), stderr(&out)),
            (Some(1), message.to_string()),
            "{args:?}"
        );
    }
    // ...and cannot open the tty behind vmctl's back either.
    let open = other
        .command_for("/bin/sh")
        .args(["-c", &format!("exec 3<>{tty}")])
        .output()
        .unwrap();
    assert!(!open.status.success(), "user opened root's console tty");
    assert!(
        stderr(&open).contains("Permission denied"),
        "{}",
        stderr(&open)
    );
    assert_eq!(status_row(&vmd, "tiny")[7], "running");

    // A graceful stop presses the power button; this guest ignores it and
    // stays in "stopping" until forced.
    let out = vmd.vmctl(&["stop", "tiny"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(0),
            "stopping vm tiny: requested to shutdown vm 1\n".to_string()
        )
    );
    assert_eq!(status_row(&vmd, "tiny")[7], "stopping");
    let out = vmd.vmctl(&["stop", "tiny"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(1),
            "stopping vm tiny: failed: Operation already in progress\n".to_string()
        )
    );

    // wait, in the background, sees the forced stop.
    let waiter = vmd
        .command()
        .args(["wait", "tiny"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon handles one request at a time: once it has logged the
    // wait, the wait is registered before the stop below is read.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vmd.log().contains("request wait from uid 0") {
        assert!(Instant::now() < deadline, "the wait never reached vmd");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = vmd.vmctl(&["stop", "-f", "tiny"]);
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(0),
            "stopping vm tiny: forced to terminate vm 1\n".to_string()
        ),
        "{}",
        vmd.log()
    );
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(waited.status.code(), Some(0));
    assert_eq!(stderr(&waited), "waiting for vm tiny: terminated vm 1\n");

    // An ad-hoc VM is gone once stopped.
    let out = vmd.vmctl(&["status"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );
    let out = vmd.vmctl(&["stop", "tiny"]);
    assert_eq!(stderr(&out), "stopping vm tiny: vm not found\n");
}

#[test]
fn a_user_starts_and_attaches_to_their_own_vm() {
    if !is_root() {
        return;
    }
    // Other users start VMs the configuration gives them (vmd's rule:
    // no ad-hoc VMs for non-root users).
    let user = User::create();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = dir.path().join("echo.elf");
    std::fs::write(&kernel, echo_guest()).unwrap();
    let vmd = Vmd::start(&format!(
        "vm \"mine\" {{\n  disable\n  boot \"{}\"\n  memory 32M\n  owner {}\n}}\n",
        kernel.display(),
        user.name
    ));
    std::fs::set_permissions(&vmd.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let as_user = |args: &[&str]| {
        let mut cmd = vmd.command();
        cmd.uid(user.uid).gid(user.gid).args(args);
        cmd
    };

    let out = as_user(&["start", "-b", kernel.to_str().unwrap(), "adhoc"])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(1),
            "vmctl: start vm command failed: Operation not permitted\n".to_string()
        )
    );

    let out = as_user(&["start", "mine"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        vmd.log()
    );
    let tty = started_tty(&stderr(&out), 1);
    let row = status_row(&vmd, "mine");
    assert_eq!(row[6], user.name, "the starting user owns the VM: {row:?}");

    // The user's own console works through vmctl.
    let console = as_user(&["console", "mine"]);
    echo_through_console(console, &tty);

    let out = as_user(&["stop", "-f", "mine"]).output().unwrap();
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(0),
            "stopping vm mine: forced to terminate vm 1\n".to_string()
        )
    );
}
