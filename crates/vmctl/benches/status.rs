//! What one `vmctl status` costs end to end with 100 registered VMs: the
//! vmctl process started, connected, answered and printing its table, and
//! the same with `--json` (run as root: `cargo bench -p vmctl --bench
//! status`). Prints medians and 90th percentiles; the machine is noisy, so
//! compare medians, never single runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::vmd::{is_root, Vmd};

const RUNS: usize = 300;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

fn measure(vmd: &Vmd, args: &[&str], exit: i32) -> (Duration, Duration) {
    let samples = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = vmd.vmctl(args);
            let took = start.elapsed();
            assert_eq!(out.status.code(), Some(exit), "{args:?}");
            took
        })
        .collect();
    percentiles(samples)
}

fn main() {
    if !is_root() {
        eprintln!("status bench: needs root, skipped");
        return;
    }
    let kernel = tempfile::NamedTempFile::new().unwrap();
    let conf: String = (0..100)
        .map(|i| {
            format!(
                "vm \"vm{i}\" {{\n disable\n boot \"{}\"\n memory 64M\n}}\n",
                kernel.path().display()
            )
        })
        .collect();
    let vmd = Vmd::start(&conf);
    let rows = String::from_utf8(vmd.vmctl(&["status"]).stdout).unwrap();
    assert_eq!(rows.lines().count(), 101, "100 VMs and the header");
    // The first line is the cost of starting vmctl at all (a command that
    // never talks to the daemon): the floor under the others.
    for (args, exit) in [
        (&["send", "vm1"][..], 1),
        (&["status"], 0),
        (&["status", "--json"], 0),
        (&["status", "vm42"], 0),
    ] {
        let (median, p90) = measure(&vmd, args, exit);
        println!(
            "vmctl {:<16} 100 VMs: median {:>7.3} ms, p90 {:>7.3} ms ({RUNS} runs)",
            args.join(" "),
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3
        );
    }
}
