//! VMs through the daemon: tiny guests from the `testguests` crate boot on
//! this machine's /dev/kvm in `vm` processes, driven with the protocol.
//! Start, status, graceful and forced stop, reboot restarts on the same
//! tty, config VMs kept and ad-hoc ones forgotten, a killed vm process,
//! pause, and what one user may do to another's VM. Needs root.

mod common;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{is_root, Daemon, TestUser};
use proto::{Request, Response, StartRequest, VmInfo, VmState, VmTarget};

fn kvm_usable() -> bool {
    if !is_root() {
        return false;
    }
    let kvm = Path::new("/dev/kvm").exists();
    if !kvm {
        common::skip("needs /dev/kvm");
    }
    kvm
}

/// A copy of a test guest that every user may read.
fn guest(d: &Daemon, src: &str) -> PathBuf {
    let name = Path::new(src).file_name().unwrap();
    let dst = d.dir.path().join(name);
    std::fs::copy(src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    dst
}

fn vm_conf(name: &str, kernel: &Path, extra: &str) -> String {
    format!(
        "vm \"{name}\" {{\n disable\n boot \"{}\"\n memory 32M\n{extra}}}\n",
        kernel.display()
    )
}

fn name(n: &str) -> VmTarget {
    VmTarget::Name(n.into())
}

fn row(d: &Daemon, n: &str) -> Option<VmInfo> {
    match d.request(&Request::Status {
        target: Some(name(n)),
    }) {
        Response::VmInfo(mut rows) => rows.pop(),
        Response::Error { code } if code == libc::ENOENT => None,
        other => panic!("status: {other:?}"),
    }
}

fn start(d: &Daemon, n: &str) -> (u32, String) {
    match d.request(&Request::Start(StartRequest {
        conf: Box::new(vmconf::VmConf::new(n)),
    })) {
        Response::StartOk { id, tty } => (id, tty),
        other => panic!("start {n}: {other:?}; log:\n{}", d.log()),
    }
}

/// Reads a console until `marker` has appeared `count` times.
fn read_console(tty: &str, marker: &str, count: usize) -> String {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(tty)
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while text.matches(marker).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {marker} x{count} on {tty}: {text:?}"
        );
        match f.read(&mut buf) {
            Ok(n) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    text
}

/// Waits until `cond` holds for the VM's status row.
fn wait_for(d: &Daemon, n: &str, what: &str, cond: impl Fn(Option<&VmInfo>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = row(d, n);
        if cond(r.as_ref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n}: never {what}: {r:?}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn start_status_and_graceful_stop_of_a_config_vm() {
    if !kvm_usable() {
        return;
    }
    let d0 = Daemon::start("");
    let idle = guest(&d0, testguests::IDLE);
    std::fs::write(&d0.conf, vm_conf("idle", &idle, "")).unwrap();
    assert_eq!(d0.request(&Request::Reload), Response::Ok);
    let d = d0;

    let (id, tty) = start(&d, "idle");
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    let r = row(&d, "idle").unwrap();
    assert_eq!(r.id, id);
    assert_eq!(r.state, VmState::Running);
    assert_eq!(r.tty.as_deref(), Some(tty.as_str()));
    assert_eq!(r.cur_mem, 32 << 20);
    let pid = r.pid.expect("a running VM has a pid");
    // The vm process runs unprivileged like vmm, under vmm's seccomp
    // allow-list and its own, tighter one (two filters, vmm has one), with
    // no_new_privs; each of its threads (vCPUs, RTC, console) too.
    assert_eq!(common::uid_of(pid), common::uid_of(d.children()[0].0));
    assert_ne!(common::uid_of(pid), 0);
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st.lines().any(|l| l == "Seccomp:\t2"), "{st}");
    assert!(st.lines().any(|l| l == "Seccomp_filters:\t2"), "{st}");
    assert!(st.lines().any(|l| l == "NoNewPrivs:\t1"), "{st}");
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        // A thread may end meanwhile: check those still there.
        if let Ok(st) = std::fs::read_to_string(task.unwrap().path().join("status")) {
            assert!(st.lines().any(|l| l == "Seccomp_filters:\t2"), "{st}");
        }
    }
    let (vmm, _) = d
        .children()
        .into_iter()
        .find(|(_, c)| c.starts_with("vmd: vmm"))
        .unwrap();
    let st = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    assert!(st.lines().any(|l| l == "Seccomp_filters:\t1"), "{st}");
    read_console(&tty, "IDLE-READY", 1);

    // Starting it again is refused: it runs.
    assert_eq!(
        d.request(&Request::Start(StartRequest {
            conf: Box::new(vmconf::VmConf::new("idle"))
        })),
        Response::Error {
            code: libc::EALREADY
        }
    );
    // The power button: the guest powers itself off.
    assert_eq!(
        d.request(&Request::Stop {
            target: name("idle"),
            force: false,
            wait: true
        }),
        Response::Terminated { id }
    );
    let r = row(&d, "idle").expect("a config VM stays registered");
    assert_eq!(r.state, VmState::Stopped);
    assert_eq!(r.pid, None);
    assert_eq!(r.tty, None);
    // Stopping a stopped VM is vmd's "not running".
    assert_eq!(
        d.request(&Request::Stop {
            target: name("idle"),
            force: false,
            wait: false
        }),
        Response::Error {
            code: proto::codes::VMD_VM_STOP_INVALID
        }
    );
    // Same id when started again.
    assert_eq!(start(&d, "idle").0, id);
}

#[test]
fn forced_stop_and_an_ad_hoc_vm_is_forgotten() {
    if !kvm_usable() {
        return;
    }
    let d = Daemon::start("");
    let idle = guest(&d, testguests::IDLE);
    let mut conf = vmconf::VmConf::new("adhoc");
    conf.boot = Some(idle);
    conf.memory = Some(32 << 20);
    let id = match d.request(&Request::Start(StartRequest {
        conf: Box::new(conf),
    })) {
        Response::StartOk { id, .. } => id,
        other => panic!("{other:?}; log:\n{}", d.log()),
    };
    assert_eq!(row(&d, "adhoc").unwrap().state, VmState::Running);
    assert_eq!(
        d.request(&Request::Stop {
            target: VmTarget::Id(id),
            force: true,
            wait: true
        }),
        Response::Terminated { id }
    );
    assert_eq!(
        row(&d, "adhoc"),
        None,
        "an ad-hoc VM is removed once stopped"
    );
}

#[test]
fn a_rebooting_guest_restarts_on_the_same_tty_until_too_quick() {
    if !kvm_usable() {
        return;
    }
    let d = Daemon::start("");
    let reboot = guest(&d, testguests::REBOOT);
    std::fs::write(&d.conf, vm_conf("rb", &reboot, "")).unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok);
    let (id, tty) = start(&d, "rb");
    wait_for(&d, "rb", "stopped", |r| {
        r.is_some_and(|r| r.state == VmState::Stopped)
    });
    // The first start and two quick restarts, each on the one console
    // kept across reboots; then vmd gives up. (The guest is done within
    // milliseconds, so the evidence is the log, not the console, which
    // is gone by the time a test could open it.)
    let log = d.log();
    let runs = format!("rb: started vm {id} successfully, tty {tty}");
    assert_eq!(log.matches(&runs).count(), 3, "{log}");
    assert_eq!(
        log.matches(&format!("vm {id}: the guest rebooted, restarting it"))
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("restarted too quickly"), "{log}");
    assert_eq!(row(&d, "rb").unwrap().id, id);
}

#[test]
fn a_killed_vm_process_is_a_stopped_vm() {
    if !kvm_usable() {
        return;
    }
    let d = Daemon::start("");
    let idle = guest(&d, testguests::IDLE);
    std::fs::write(&d.conf, vm_conf("victim", &idle, "")).unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok);
    let (id, _) = start(&d, "victim");
    let mut waiter = d.client();
    waiter.send(&Request::Wait(name("victim")), &[]).unwrap();
    let pid = row(&d, "victim").unwrap().pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(
        waiter.recv_msg::<Response>().unwrap(),
        Response::Terminated { id }
    );
    assert_eq!(row(&d, "victim").unwrap().state, VmState::Stopped);
    // The daemon carries on.
    start(&d, "victim");
}

#[test]
fn pause_and_unpause() {
    if !kvm_usable() {
        return;
    }
    let d = Daemon::start("");
    let idle = guest(&d, testguests::IDLE);
    std::fs::write(&d.conf, vm_conf("p", &idle, "")).unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok);
    let (id, _) = start(&d, "p");
    assert_eq!(
        d.request(&Request::Pause(name("p"))),
        Response::Paused { id }
    );
    assert_eq!(row(&d, "p").unwrap().state, VmState::Paused);
    assert_eq!(
        d.request(&Request::Pause(name("p"))),
        Response::Error {
            code: libc::EALREADY
        }
    );
    assert_eq!(
        d.request(&Request::Unpause(name("p"))),
        Response::Unpaused { id }
    );
    assert_eq!(row(&d, "p").unwrap().state, VmState::Running);
}

#[test]
fn shutdown_ends_every_vm() {
    if !kvm_usable() {
        return;
    }
    let mut d = Daemon::start("");
    let idle = guest(&d, testguests::IDLE);
    std::fs::write(
        &d.conf,
        vm_conf("s1", &idle, "") + &vm_conf("s2", &idle, ""),
    )
    .unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok);
    start(&d, "s1");
    start(&d, "s2");
    let pids: Vec<i32> = ["s1", "s2"]
        .iter()
        .map(|n| row(&d, n).unwrap().pid.unwrap())
        .collect();
    assert!(d.stop().success());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "vm process {pid} survived the daemon"
        );
    }
}

#[test]
fn enabled_config_vms_start_with_the_daemon() {
    if !kvm_usable() {
        return;
    }
    let d0 = Daemon::start("");
    let idle = guest(&d0, testguests::IDLE);
    let conf = format!(
        "staggered start parallel 1 delay 1\n{}{}",
        vm_conf("e1", &idle, "").replace(" disable\n", " enable\n"),
        vm_conf("e2", &idle, "").replace(" disable\n", " enable\n")
    );
    std::fs::write(&d0.conf, conf).unwrap();
    assert_eq!(d0.request(&Request::Reload), Response::Ok);
    // One at once: the second waits for the next batch, a second later.
    wait_for(&d0, "e1", "running", |r| {
        r.is_some_and(|r| r.state == VmState::Running)
    });
    wait_for(&d0, "e2", "running", |r| {
        r.is_some_and(|r| r.state == VmState::Running)
    });
}

#[test]
fn one_user_cannot_touch_anothers_vm_console_or_files() {
    if !kvm_usable() {
        return;
    }
    let alice = TestUser::create("a");
    let bob = TestUser::create("b");
    let d = Daemon::start("");
    d.open_socket_to_all();
    let idle = guest(&d, testguests::IDLE);
    let secret = d.dir.path().join("secret.elf");
    std::fs::copy(testguests::IDLE, &secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conf = format!(
        "{}vm \"tpl\" {{\n disable\n boot \"{}\"\n memory 32M\n allow instance {{ boot, disk }}\n \
         allow instance {{ owner {} }}\n}}\n",
        vm_conf("avm", &idle, &format!(" owner {}\n", alice.name)),
        idle.display(),
        bob.name
    );
    std::fs::write(&d.conf, conf).unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok, "{}", d.log());

    // Alice starts her VM: the console is hers, not bob's.
    let req = Request::Start(StartRequest {
        conf: Box::new(vmconf::VmConf::new("avm")),
    });
    let (id, tty) = match alice.request(&d.sock, &req) {
        Response::StartOk { id, tty } => (id, tty),
        other => panic!("{other:?}; log:\n{}", d.log()),
    };
    let meta = std::fs::metadata(&tty).unwrap();
    assert_eq!(meta.uid(), alice.uid);
    assert_eq!(meta.mode() & 0o777, 0o620);
    assert_eq!(
        alice.request(&d.sock, &Request::Console(VmTarget::Id(id))),
        Response::Console {
            id,
            tty: tty.clone()
        }
    );
    let eperm = Response::Error { code: libc::EPERM };
    assert_eq!(
        bob.request(&d.sock, &Request::Console(VmTarget::Id(id))),
        eperm
    );
    let out = bob
        .command("python3")
        .args(["-c", "import sys; open(sys.argv[1], 'rb')", &tty])
        .output()
        .unwrap();
    assert!(!out.status.success(), "bob opened alice's console");
    for req in [
        Request::Stop {
            target: VmTarget::Id(id),
            force: true,
            wait: false,
        },
        Request::Pause(VmTarget::Id(id)),
        Request::Wait(VmTarget::Id(id)),
    ] {
        assert_eq!(bob.request(&d.sock, &req), eperm, "{req:?}");
    }
    assert_eq!(row(&d, "avm").unwrap().state, VmState::Running);

    // Bob may instantiate the template with his own kernel, but only one
    // he can read.
    let instance = |n: &str, boot: &Path| {
        let mut c = vmconf::VmConf::new(n);
        c.instance_of = Some("tpl".into());
        c.boot = Some(boot.to_path_buf());
        Request::Start(StartRequest { conf: Box::new(c) })
    };
    assert_eq!(bob.request(&d.sock, &instance("bsec", &secret)), eperm);
    assert_eq!(row(&d, "bsec"), None);
    // Nor a disk he may not write.
    let disk = d.dir.path().join("root-only.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = vmconf::VmConf::new("bdisk");
    c.instance_of = Some("tpl".into());
    c.disks = vec![vmconf::DiskConf {
        path: disk.clone(),
        format: vmconf::DiskFormat::Raw,
    }];
    let req = Request::Start(StartRequest { conf: Box::new(c) });
    assert_eq!(bob.request(&d.sock, &req), eperm);
    assert_eq!(row(&d, "bdisk"), None);
    // The same disk made writable for him passes the check (and gets as
    // far as the runtime, which has no disks yet: not EPERM).
    nix::unistd::chown(&disk, Some(bob.uid.into()), None).unwrap();
    let mut c = vmconf::VmConf::new("bdisk");
    c.instance_of = Some("tpl".into());
    c.disks = vec![vmconf::DiskConf {
        path: disk.clone(),
        format: vmconf::DiskFormat::Raw,
    }];
    let req = Request::Start(StartRequest { conf: Box::new(c) });
    assert_ne!(bob.request(&d.sock, &req), eperm);
    match bob.request(&d.sock, &instance("bok", &idle)) {
        Response::StartOk { tty, .. } => {
            assert_eq!(std::fs::metadata(&tty).unwrap().uid(), bob.uid)
        }
        other => panic!("{other:?}; log:\n{}", d.log()),
    }
    // Alice stops her own VM.
    assert_eq!(
        alice.request(
            &d.sock,
            &Request::Stop {
                target: VmTarget::Id(id),
                force: true,
                wait: true
            }
        ),
        Response::Terminated { id }
    );
}

#[test]
fn a_vm_that_cannot_be_built_is_an_error_and_stays_stopped() {
    if !kvm_usable() {
        return;
    }
    let d = Daemon::start("");
    let junk = d.file("junk.elf", b"this is not a kernel");
    std::fs::write(&d.conf, vm_conf("junk", &junk, "")).unwrap();
    assert_eq!(d.request(&Request::Reload), Response::Ok);
    let resp = d.request(&Request::Start(StartRequest {
        conf: Box::new(vmconf::VmConf::new("junk")),
    }));
    assert_eq!(resp, Response::Error { code: libc::EINVAL }, "{}", d.log());
    let r = row(&d, "junk").unwrap();
    assert_eq!(r.state, VmState::Stopped);
    assert_eq!(r.tty, None);
    // A kernel that does not exist is ENOENT, before any process starts.
    let mut conf = vmconf::VmConf::new("ghost");
    conf.boot = Some(d.dir.path().join("missing.elf"));
    assert_eq!(
        d.request(&Request::Start(StartRequest {
            conf: Box::new(conf)
        })),
        Response::Error { code: libc::ENOENT }
    );
    assert_eq!(row(&d, "ghost"), None);
}
