//! The daemon's processes and control plane, driven through the protocol:
//! privilege separation, the control socket, configuration handling and
//! the death of children. Needs root (skipped otherwise).

mod common;

use std::path::Path;
use std::process::Command;

use common::{is_root, uid_of, vmd_bin, Daemon, TestUser};
use nix::sys::signal::Signal;
use privsep::ChannelError;
use proto::{Request, ResetKind, Response, VmState, VmTarget};

fn status(d: &Daemon) -> Vec<proto::VmInfo> {
    match d.request(&Request::Status { target: None }) {
        Response::VmInfo(rows) => rows,
        other => panic!("status: {other:?}"),
    }
}

#[test]
fn empty_daemon_lists_no_vms() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    assert_eq!(status(&d), vec![]);
}

#[test]
fn control_and_vmm_run_as_the_unprivileged_user() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    let kids = d.children();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids
        .iter()
        .any(|(_, c)| c.starts_with("vmd: control -P control")));
    assert!(kids.iter().any(|(_, c)| c.starts_with("vmd: vmm -P vmm")));
    let vmd_uid = nix::unistd::User::from_name("_vmd")
        .unwrap()
        .or_else(|| nix::unistd::User::from_name("nobody").unwrap())
        .unwrap()
        .uid
        .as_raw();
    for (pid, _) in &kids {
        assert_eq!(uid_of(*pid), vmd_uid, "child {pid} is not unprivileged");
    }
    assert_eq!(uid_of(d.pid()), 0);
    // The parent keeps only the capabilities it needs (chown, dac
    // override and read search, fowner, kill, setgid, setuid, net_admin).
    let st = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    assert!(st.lines().any(|l| l == "CapEff:\t00000000000010ef"), "{st}");
    assert!(st.lines().any(|l| l == "CapBnd:\t00000000000010ef"), "{st}");
    assert!(st.lines().any(|l| l == "Seccomp:\t2"), "{st}");
    // The control process is under its seccomp filter (mode 2) and
    // no_new_privs.
    let (control, _) = kids
        .iter()
        .find(|(_, c)| c.starts_with("vmd: control"))
        .unwrap();
    let st = std::fs::read_to_string(format!("/proc/{control}/status")).unwrap();
    assert!(st.lines().any(|l| l == "Seccomp:\t2"), "{st}");
    assert!(st.lines().any(|l| l == "NoNewPrivs:\t1"), "{st}");
}

#[test]
fn socket_is_mode_0660_and_removed_on_shutdown() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start("");
    let mode = std::fs::metadata(&d.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(!d.sock.exists());
}

#[test]
fn garbage_from_one_client_does_not_disturb_another() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    let mut good = d.client();
    let mut bad = d.client();
    bad.send_packet(&[proto::VERSION, 0xee, 0xff, 0x01], &[])
        .unwrap();
    // The bad client is disconnected without an answer...
    assert!(matches!(
        bad.recv_msg::<Response>(),
        Err(ChannelError::Closed)
    ));
    // ...a wrong version too...
    let mut old = d.client();
    old.send_packet(&[proto::VERSION + 1, 0], &[]).unwrap();
    assert!(matches!(
        old.recv_msg::<Response>(),
        Err(ChannelError::Closed)
    ));
    // ...and the good one, connected all along, is served.
    good.send(&Request::Status { target: None }, &[]).unwrap();
    assert_eq!(
        good.recv_msg::<Response>().unwrap(),
        Response::VmInfo(vec![])
    );
    // Random packets, each on its own connection: every one is refused
    // (or, by chance, a valid request), and the daemon carries on.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..100 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed % 300) as usize;
        let mut packet: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
        packet[0] = proto::VERSION;
        let c = d.client();
        let _ = c.send_packet(&packet, &[]);
    }
    // A packet larger than the protocol allows.
    let big = d.client();
    let _ = big.send_packet(&vec![proto::VERSION; proto::MAX_FRAME + 1000], &[]);
    assert_eq!(status(&d), vec![]);
    // A client that hangs up with a request in flight changes nothing.
    let quitter = d.client();
    quitter
        .send(&Request::Wait(VmTarget::Name("nope".into())), &[])
        .unwrap();
    drop(quitter);
    assert_eq!(status(&d), vec![]);
}

#[test]
fn many_clients_at_once() {
    if !is_root() {
        return;
    }
    // 100 VMs make each status reply several KiB; 300 clients ask before
    // any of them reads, so replies pile up on every side.
    let kernel = tempfile::NamedTempFile::new().unwrap();
    let conf: String = (0..100)
        .map(|i| {
            format!(
                "vm \"m{i}\" {{\n disable\n boot \"{}\"\n}}\n",
                kernel.path().display()
            )
        })
        .collect();
    let d = Daemon::start(&conf);
    let mut clients: Vec<_> = (0..300).map(|_| d.client()).collect();
    for c in &clients {
        c.send(&Request::Status { target: None }, &[]).unwrap();
    }
    for c in &mut clients {
        match c.recv_msg::<Response>().unwrap() {
            Response::VmInfo(rows) => assert_eq!(rows.len(), 100),
            other => panic!("{other:?}"),
        }
    }
}

fn conf_with_disabled_vm(kernel: &Path) -> String {
    format!(
        "vm \"cfg1\" {{\n  disable\n  boot \"{}\"\n  memory 64M\n}}\n",
        kernel.display()
    )
}

#[test]
fn config_vms_are_listed_as_stopped() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("kernel");
    std::fs::write(&kernel, b"k").unwrap();
    let d = Daemon::start(&conf_with_disabled_vm(&kernel));
    let rows = status(&d);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "cfg1");
    assert_eq!(rows[0].state, VmState::Stopped);
    assert_eq!(rows[0].max_mem, 64 << 20);
    assert_eq!(rows[0].pid, None);
    assert_eq!(
        d.request(&Request::Status {
            target: Some(VmTarget::Name("other".into()))
        }),
        Response::Error { code: libc::ENOENT }
    );
}

#[test]
fn load_adds_vms_and_reset_forgets_them() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    let kernel = d.file("kernel", b"k");
    let extra = d.file("extra.conf", conf_with_disabled_vm(&kernel).as_bytes());
    assert_eq!(d.request(&Request::Load(extra)), Response::Ok);
    assert_eq!(status(&d).len(), 1);
    let broken = d.file("broken.conf", b"vm {\n");
    assert_eq!(
        d.request(&Request::Load(broken)),
        Response::Error { code: libc::EINVAL }
    );
    assert_eq!(status(&d).len(), 1);
    assert_eq!(d.request(&Request::Reset(ResetKind::Vms)), Response::Ok);
    assert_eq!(status(&d), vec![]);
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_old_config() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    let kernel = d.file("kernel", b"k");
    std::fs::write(&d.conf, conf_with_disabled_vm(&kernel)).unwrap();
    d.signal(Signal::SIGHUP);
    let mut rows = status(&d);
    for _ in 0..500 {
        if !rows.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        rows = status(&d);
    }
    assert_eq!(rows.len(), 1, "SIGHUP did not reload; log:\n{}", d.log());
    std::fs::write(&d.conf, "this is not vm.conf\n").unwrap();
    d.signal(Signal::SIGHUP);
    assert_eq!(
        d.request(&Request::Reload),
        Response::Error { code: libc::EINVAL }
    );
    assert_eq!(status(&d).len(), 1);
}

#[test]
fn non_root_users_may_not_load_reload_reset_or_log() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    d.open_socket_to_all();
    let user = TestUser::create("a");
    for req in [
        Request::Reload,
        Request::Load("/etc/vm.conf".into()),
        Request::Reset(ResetKind::All),
        Request::Log(proto::LogLevel::Verbose),
    ] {
        assert_eq!(
            user.request(&d.sock, &req),
            Response::Error { code: libc::EPERM },
            "{req:?}"
        );
    }
    // Status is for everyone.
    assert_eq!(
        user.request(&d.sock, &Request::Status { target: None }),
        Response::VmInfo(vec![])
    );
    assert!(d
        .log()
        .contains(&format!("denied request reload from uid {}", user.uid)));
}

#[test]
fn a_dead_control_process_takes_the_daemon_down() {
    if !is_root() {
        return;
    }
    let mut d = Daemon::start("");
    let (pid, _) = d
        .children()
        .into_iter()
        .find(|(_, c)| c.starts_with("vmd: control"))
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(1));
    assert!(!d.sock.exists());
}

#[test]
fn a_dead_vmm_process_takes_the_daemon_down() {
    if !is_root() {
        return;
    }
    let mut d = Daemon::start("");
    let daemon_pid = d.pid();
    let (pid, _) = d
        .children()
        .into_iter()
        .find(|(_, c)| c.starts_with("vmd: vmm"))
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(1));
    assert!(!d.sock.exists());
    // The control process went with it.
    assert!(common::children_of(daemon_pid).is_empty());
}

#[test]
fn vmd_needs_root() {
    if !is_root() {
        return;
    }
    let user = TestUser::create("r");
    let out = user
        .command(vmd_bin())
        .args(["-d", "-f", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vmd: need root privileges\n"
    );
}

#[test]
fn bad_flags_print_usage() {
    let out = Command::new(vmd_bin()).arg("-x").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("usage: vmd [-dnv] [-D macro=value] [-f file] [-s socket]"),
        "{err}"
    );
}

#[test]
fn configtest_matches_the_vmconf_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmconf/tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    cases.sort();
    assert!(cases.len() > 20, "golden files missing");
    for name in cases {
        let expected = std::fs::read_to_string(dir.join(name.replace(".conf", ".ok"))).unwrap();
        let out = Command::new(vmd_bin())
            .current_dir(&dir)
            .args(["-n", "-f", &name])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{name}");
        let ok = expected.ends_with("configuration OK\n");
        assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "{name}");
    }
}

#[test]
fn socket_owner_lets_a_group_in() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let user = TestUser::create("g");
    let d = Daemon::start(&format!("socket owner :{}\n", user.name));
    let meta = std::fs::metadata(&d.sock).unwrap();
    assert_eq!(meta.gid(), user.gid);
    assert_eq!(meta.uid(), 0);
    // No chmod: the group's 0660 is what lets the user in.
    assert_eq!(
        user.request(&d.sock, &Request::Status { target: None }),
        Response::VmInfo(vec![])
    );
}

#[test]
fn root_sets_the_log_level() {
    if !is_root() {
        return;
    }
    let d = Daemon::start("");
    assert_eq!(
        d.request(&Request::Log(proto::LogLevel::Brief)),
        Response::Ok
    );
    // Brief: the per-request debug line is no longer logged.
    let before = d.log().matches("request status from uid 0").count();
    let _ = status(&d);
    assert_eq!(d.log().matches("request status from uid 0").count(), before);
    assert_eq!(
        d.request(&Request::Log(proto::LogLevel::Verbose)),
        Response::Ok
    );
    let _ = status(&d);
    assert_eq!(
        d.log().matches("request status from uid 0").count(),
        before + 1
    );
}

#[test]
fn without_d_vmd_detaches_and_serves() {
    if !is_root() {
        return;
    }
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vm.conf");
    std::fs::write(&conf, "").unwrap();
    let sock = dir.path().join("vmd.sock");
    let st = Command::new(vmd_bin())
        .arg("-f")
        .arg(&conf)
        .arg("-s")
        .arg(&sock)
        .status()
        .unwrap();
    // The command returns once the daemon has detached.
    assert!(st.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut chan = loop {
        if let Ok(c) = privsep::Channel::connect(&sock) {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    chan.send(&Request::Status { target: None }, &[]).unwrap();
    assert_eq!(
        chan.recv_msg::<Response>().unwrap(),
        Response::VmInfo(vec![])
    );
    // The listening process is the detached parent: not our child, no
    // terminal.
    let daemon = privsep::channel::peer_cred(chan.as_fd()).unwrap().pid;
    let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_ne!(
        fields[1],
        std::process::id().to_string(),
        "the daemon is not our child"
    );
    assert_eq!(
        fields[3],
        daemon.to_string(),
        "the daemon leads its session"
    );
    assert_eq!(fields[4], "0", "the daemon has no controlling terminal");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon), Signal::SIGTERM).unwrap();
    while sock.exists() {
        assert!(std::time::Instant::now() < deadline, "socket left behind");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
