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

#[test]
fn tiny_guest_lifecycle_through_vmctl() {
    use std::io::Write;
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let kernel = vmd.file("tiny.elf", &echo_guest());

    let out = vmd.vmctl(&["start", "-b", kernel.to_str().unwrap(), "-m", "32M", "tiny"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", vmd.log());
    let tty = err
        .strip_prefix("vmctl: started vm 1 successfully, tty ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{err}"))
        .to_string();
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
    let mut console = vmd
        .command()
        .args(["console", "tiny"])
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
