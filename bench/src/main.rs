//! `vmbench`: boots the same guest with our VMM (`vm-run`) and with QEMU/KVM
//! (`-M q35`, `-M microvm`), alternating A B C A B C, and prints
//! min/median/max and ratios for boot to init, poweroff to exit and peak
//! RSS. A benchmark, never a test: it reports numbers, it does not judge
//! them. No vmd counterpart. See docs/benchmarks.md.

mod contender;
mod measure;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use contender::{Guest, Kind};
use measure::RunSpec;
use report::Series;

#[derive(Parser, Debug)]
#[command(
    name = "vmbench",
    about = "Boot-time and overhead benchmark: vm-run against QEMU/KVM on the same guest",
    // Later flags win, so wrappers can pass defaults that users override.
    args_override_self = true
)]
struct Args {
    /// Runs per contender
    #[arg(short = 'n', long, default_value_t = 5)]
    runs: usize,
    /// The test guest's directory (made by tests/guest/build)
    #[arg(long, default_value = "target/guest")]
    guest: PathBuf,
    /// Kernel: a file in the guest directory, vmlinux (PVH ELF) or vmlinuz (bzImage), or an absolute path
    #[arg(long, default_value = "vmlinux")]
    kernel: String,
    /// Initrd: a file in the guest directory or an absolute path; "none" for no initrd
    #[arg(long, default_value = "initramfs.cpio.gz")]
    initrd: String,
    /// The console line that ends the boot measurement
    #[arg(long, default_value = "GUEST-READY")]
    ready_marker: String,
    /// The console line the guest prints right before powering off (may equal --ready-marker)
    #[arg(long, default_value = "GUEST-POWEROFF")]
    poweroff_marker: String,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 256)]
    mem: u64,
    /// Guest vCPUs
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Kernel command line (the guest must print GUEST-READY, then GUEST-POWEROFF and power off)
    #[arg(long, default_value = "console=ttyS0 quiet vmd.actions=poweroff")]
    cmdline: String,
    /// Our foreground runner
    #[arg(long, default_value = "target/release/vm-run")]
    vm_run: PathBuf,
    /// The QEMU binary
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Contenders, in rotation order; the first QEMU one given is also the main baseline
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vm-run,qemu-q35,qemu-microvm"
    )]
    only: Vec<Kind>,
    /// Seconds from process start to the poweroff marker before a run is killed
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// Seconds from the poweroff marker to process exit before a run is killed
    #[arg(long, default_value_t = 20)]
    exit_timeout: u64,
    /// Stop running a contender after this many failures in a row without any success
    #[arg(long, default_value_t = 2)]
    give_up_after: usize,
    /// Keep each run's console (and stderr) here
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Also write every sample and summary as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Contender {
    kind: Kind,
    invocation: Option<contender::Invocation>,
    series: Series,
    failures_in_a_row: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let guest = Guest {
        kernel: args.guest.join(&args.kernel),
        initrd: (args.initrd != "none").then(|| args.guest.join(&args.initrd)),
        cmdline: args.cmdline.clone(),
        mem_mib: args.mem,
        cpus: args.cpus,
    };
    for f in std::iter::once(&guest.kernel).chain(guest.initrd.as_ref()) {
        if !f.is_file() {
            bail!("{} is missing: run tests/guest/build", f.display());
        }
    }
    if let Some(dir) = &args.log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let path_var = std::env::var("PATH").ok();
    let mut contenders: Vec<Contender> = Vec::new();
    for kind in args.only.iter().copied() {
        if contenders.iter().any(|c| c.kind == kind) {
            continue;
        }
        let program: &Path = if kind == Kind::VmRun {
            &args.vm_run
        } else {
            &args.qemu
        };
        let mut series = Series {
            name: kind.name().to_string(),
            ..Default::default()
        };
        let invocation = match contender::resolve(program, path_var.as_deref()) {
            Some(p) => {
                let inv = contender::invocation(kind, &p, &guest);
                series.command = inv.display();
                Some(inv)
            }
            None => {
                series.missing = Some(format!("{} not found", program.display()));
                None
            }
        };
        contenders.push(Contender {
            kind,
            invocation,
            series,
            failures_in_a_row: 0,
        });
    }

    println!(
        "vmbench: {} run(s) each, alternating {}; guest {} + {}, {} vCPU, {} MiB, cmdline '{}'",
        args.runs,
        contenders
            .iter()
            .map(|c| c.kind.name())
            .collect::<Vec<_>>()
            .join(" "),
        guest.kernel.display(),
        guest
            .initrd
            .as_ref()
            .map_or("no initrd".to_string(), |p| p.display().to_string()),
        guest.cpus,
        guest.mem_mib,
        guest.cmdline
    );
    for c in &contenders {
        match &c.invocation {
            Some(inv) => println!("  {}: {}", c.kind.name(), inv.display()),
            None => println!(
                "  {}: MISSING ({})",
                c.kind.name(),
                c.series.missing.as_deref().unwrap_or("")
            ),
        }
    }

    for round in 1..=args.runs {
        for c in contenders.iter_mut() {
            let Some(inv) = &c.invocation else { continue };
            if c.series.samples.is_empty() && c.failures_in_a_row >= args.give_up_after {
                continue;
            }
            let spec = RunSpec {
                program: inv.program.clone(),
                args: inv.args.clone(),
                console_log: args
                    .log_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}-{round}.log", c.kind.name()))),
                ready_marker: args.ready_marker.clone(),
                poweroff_marker: args.poweroff_marker.clone(),
                boot_timeout: Duration::from_secs(args.boot_timeout),
                exit_timeout: Duration::from_secs(args.exit_timeout),
                guest_mem_bytes: args.mem << 20,
            };
            match measure::run_once(&spec) {
                Ok(s) => {
                    eprintln!(
                        "vmbench: round {round}/{}: {}: boot {:.1} ms, poweroff to exit {:.1} ms, \
                         peak RSS {:.1} MiB, VMM RSS {}",
                        args.runs,
                        c.kind.name(),
                        s.boot.as_secs_f64() * 1000.0,
                        s.poweroff_to_exit.as_secs_f64() * 1000.0,
                        s.max_rss_kib as f64 / 1024.0,
                        s.vmm_rss_kib
                            .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                    );
                    c.series.samples.push(s);
                    c.failures_in_a_row = 0;
                }
                Err(e) => {
                    // The alternate form prints the whole chain (a: b: c).
                    let why = format!("{:#}", anyhow::Error::new(e));
                    eprintln!(
                        "vmbench: round {round}/{}: {}: FAILED: {why}",
                        args.runs,
                        c.kind.name()
                    );
                    c.series.failures.push(why);
                    c.failures_in_a_row += 1;
                    if c.series.samples.is_empty() && c.failures_in_a_row == args.give_up_after {
                        eprintln!(
                            "vmbench: giving up on {} after {} failures",
                            c.kind.name(),
                            c.failures_in_a_row
                        );
                    }
                }
            }
        }
    }

    let series: Vec<Series> = contenders.into_iter().map(|c| c.series).collect();
    let baselines: Vec<&str> = series
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("qemu-"))
        .collect();
    println!();
    print!(
        "{}",
        report::render(
            &series,
            args.runs,
            args.mem,
            &report::Markers {
                ready: args.ready_marker.clone(),
                poweroff: args.poweroff_marker.clone(),
            },
            &baselines
        )
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::to_json(&series, args.mem))?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
