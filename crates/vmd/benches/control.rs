//! Control-plane figures (run as root: `cargo bench -p vmd --bench
//! control`): the round trip of `status` through control and parent with
//! 100 registered VMs, on one connection and on a fresh connection each
//! time (what one `vmctl status` costs the daemon); the start of a tiny
//! guest until its first console output; and 50 starts back to back.
//! Prints medians; the machine is noisy, so compare medians, never single
//! runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use proto::{Request, Response, StartRequest};

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn main() {
    if !common::is_root() {
        eprintln!("control bench: needs root, skipped");
        return;
    }
    let kernel = tempfile::NamedTempFile::new().unwrap();
    let mut conf = String::new();
    for i in 0..100 {
        conf.push_str(&format!(
            "vm \"vm{i}\" {{\n disable\n boot \"{}\"\n memory 64M\n}}\n",
            kernel.path().display()
        ));
    }
    let d = common::Daemon::start(&conf);
    let status = Request::Status { target: None };
    match d.request(&status) {
        Response::VmInfo(rows) => assert_eq!(rows.len(), 100),
        other => panic!("{other:?}"),
    }

    let mut c = d.client();
    let mut same = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        c.send(&status, &[]).unwrap();
        let _: Response = c.recv_msg().unwrap();
        same.push(t.elapsed());
    }
    let mut fresh = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let _ = d.request(&status);
        fresh.push(t.elapsed());
    }
    let (m1, p1) = median(same);
    let (m2, p2) = median(fresh);
    println!("status, 100 VMs, same connection:  median {m1:?}, p90 {p1:?}");
    println!("status, 100 VMs, new connection:   median {m2:?}, p90 {p2:?}");

    start_figures(&d);

    let vmctl = common::vmd_bin().with_file_name("vmctl");
    if vmctl.exists() {
        let mut runs = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let out = std::process::Command::new(&vmctl)
                .arg("-s")
                .arg(&d.sock)
                .arg("status")
                .output()
                .unwrap();
            assert!(out.status.success());
            runs.push(t.elapsed());
        }
        let (m, p) = median(runs);
        println!("vmctl status process, 100 VMs:     median {m:?}, p90 {p:?}");
    }
}

fn start_req(name: &str, guest: &str) -> Request {
    let mut conf = vmconf::VmConf::new(name);
    conf.boot = Some(guest.into());
    conf.memory = Some(32 << 20);
    Request::Start(StartRequest {
        conf: Box::new(conf),
    })
}

/// Start → `StartOk`, and start → the guest's first console line (its
/// first instructions ran), for a guest that prints and waits for the
/// power button (so its console is still there to read).
fn start_figures(d: &common::Daemon) {
    let mut to_reply = Vec::new();
    let mut to_output = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        let tty = match d.request(&start_req(&format!("b{i}"), testguests::IDLE)) {
            Response::StartOk { tty, .. } => tty,
            other => panic!("{other:?}"),
        };
        to_reply.push(t.elapsed());
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&tty)
            .unwrap();
        let mut text = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&text).contains("IDLE-READY") {
            if let Ok(n) = f.read(&mut buf) {
                text.extend_from_slice(&buf[..n]);
            }
            assert!(t.elapsed() < Duration::from_secs(10));
        }
        to_output.push(t.elapsed());
        // End it (and so forget it) before the next one.
        let stop = Request::Stop {
            target: proto::VmTarget::Name(format!("b{i}")),
            force: true,
            wait: true,
        };
        assert!(matches!(d.request(&stop), Response::Terminated { .. }));
    }
    let (m, p) = median(to_reply);
    println!("start → StartOk (VM built):       median {m:?}, p90 {p:?}");
    let (m, p) = median(to_output);
    println!("start → first guest output:        median {m:?}, p90 {p:?}");

    let t = Instant::now();
    for i in 0..50 {
        match d.request(&start_req(&format!("r{i}"), testguests::HELLO)) {
            Response::StartOk { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "50 starts back to back:            {:.1} VMs/s",
        50.0 / secs
    );
}
