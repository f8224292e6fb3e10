//! Starting small VMs through vmd with vmctl (run as root: `cargo bench
//! -p vmctl --bench start`): 50 tiny guests started back to back, each by
//! its own `vmctl start` process; reports the start rate and the median
//! and 90th percentile of one `vmctl start` (process start to "started vm
//! N successfully"), then stops them all with `vmctl stop -a -f`. The
//! machine is noisy: compare medians and rates, never single runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::guest::halt_guest;
use common::vmd::{is_root, stderr, Vmd};

const VMS: usize = 50;

fn main() {
    if !is_root() {
        eprintln!("start bench: needs root, skipped");
        return;
    }
    let vmd = Vmd::start("");
    let kernel = vmd.file("halt.elf", &halt_guest());
    let kernel = kernel.to_str().unwrap();

    let mut each = Vec::with_capacity(VMS);
    let all = Instant::now();
    for i in 0..VMS {
        let name = format!("vm{i}");
        let start = Instant::now();
        let out = vmd.vmctl(&["start", "-b", kernel, "-m", "32M", &name]);
        each.push(start.elapsed());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            stderr(&out),
            vmd.log()
        );
    }
    let total = all.elapsed();

    let listed = vmd.vmctl(&["status", "-r"]);
    let running = String::from_utf8_lossy(&listed.stdout).lines().count() - 1;
    assert_eq!(running, VMS, "all started VMs are running");

    each.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "vmctl start, {VMS} tiny VMs back to back: {:.1} VMs/s; one start median {:.2} ms, p90 {:.2} ms",
        VMS as f64 / total.as_secs_f64(),
        ms(each[VMS / 2]),
        ms(each[VMS * 9 / 10])
    );

    let stop = Instant::now();
    let out = vmd.vmctl(&["stop", "-a", "-f"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    println!(
        "vmctl stop -a -f of {VMS} VMs: {:.1} ms",
        ms(stop.elapsed())
    );
}
