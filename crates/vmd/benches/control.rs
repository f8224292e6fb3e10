//! Control-plane figures (run as root: `cargo bench -p vmd --bench
//! control`): the round trip of `status` through control and parent with
//! 100 registered VMs, on one connection and on a fresh connection each
//! time (what one `vmctl status` costs the daemon). Prints medians; the
//! machine is noisy, so compare medians, never single runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use proto::{Request, Response};

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
