//! vm-run: runs one VM in the foreground with its serial console on stdio,
//! using the same runtime as vmd's `vm` processes (`vmd::vm`).
//!
//! `vm-run [-v] [-m SIZE] [-C CPUS] -b KERNEL [-I INITRD] [-k CMDLINE] [-d DISK]...`
//!
//! Exit status: the VM's outcome ([`vmd::vm::VmOutcome::exit_code`]: 0
//! powered off or terminated, 11 (EAGAIN) rebooted, 1 failed), or 2 for bad
//! flags or files. Each SIGTERM presses the ACPI power button (a graceful
//! shutdown request, as `vmctl stop`); SIGINT, SIGHUP and SIGQUIT terminate
//! the VM at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Instant;

use vmd::vm::{Console, Error as VmError, Vm, VmConfig, VmHandle};

const USAGE: &str =
    "usage: vm-run [-v] [-m size] [-C cpus] -b kernel [-I initrd] [-k cmdline] [-d disk]...";

struct Args {
    memory: u64,
    vcpus: u8,
    kernel: String,
    initrd: Option<String>,
    cmdline: String,
    disks: Vec<String>,
    verbose: bool,
}

/// Parses a size with an optional K/M/G/T suffix (bytes without one, as vmctl's `-m`).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        memory: 512 << 20,
        vcpus: 1,
        kernel: String::new(),
        initrd: None,
        cmdline: String::new(),
        disks: Vec::new(),
        verbose: false,
    };
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err(format!("unexpected argument '{arg}'"));
        };
        let (opt, attached) = flag.split_at(1);
        if opt == "v" && attached.chars().all(|c| c == 'v') {
            a.verbose = true;
            continue;
        }
        if opt == "h" {
            return Err(String::new());
        }
        if !"mCbIkd".contains(opt) {
            return Err(format!("unknown flag -{opt}"));
        }
        let value = if !attached.is_empty() {
            attached.to_string()
        } else {
            let v = argv.get(i).ok_or_else(|| format!("-{opt} needs a value"))?;
            i += 1;
            v.clone()
        };
        match opt {
            "m" => {
                a.memory =
                    parse_size(&value).ok_or_else(|| format!("invalid memory size '{value}'"))?;
            }
            "C" => {
                a.vcpus = value
                    .parse::<u8>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("invalid number of cpus '{value}'"))?;
            }
            "b" => a.kernel = value,
            "I" => a.initrd = Some(value),
            "k" => a.cmdline = value,
            "d" => a.disks.push(value),
            _ => unreachable!("flag list checked above"),
        }
    }
    if a.kernel.is_empty() {
        return Err("a kernel is required (-b kernel)".into());
    }
    if !a.disks.is_empty() {
        return Err("disks (-d) are not yet supported".into());
    }
    Ok(a)
}

fn fail(msg: &str) -> ! {
    eprintln!("vm-run: {msg}");
    std::process::exit(2);
}

fn open(what: &str, path: &str) -> File {
    match File::open(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Ok(_) => fail(&format!("{what} {path}: not a regular file")),
        Err(e) => fail(&format!("{what} {path}: {e}")),
    }
}

/// Blocks the signals the signal thread waits for, in this thread and every
/// thread created after it.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask changes
    // only this thread's mask (inherited by threads spawned later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn signal_thread(set: libc::sigset_t, handle: VmHandle) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset; `sig` is writable.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        if sig == libc::SIGTERM {
            handle.power_button();
        } else {
            handle.terminate();
        }
    }
}

/// Puts the terminal on stdin in raw mode (output post-processing kept)
/// and restores it when dropped.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, OutputFlags, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        raw.output_flags |= OutputFlags::OPOST;
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return Self(None);
        }
        Self(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Logs peak and current resident memory, split into anonymous (the VMM's
/// own heap and stacks), file (the binary and libraries) and shared (guest
/// RAM the guest touched) pages. `status` is `/proc/self/status`, opened
/// before the seccomp filter (which allows no `open`): read again from its
/// start, it is current.
fn log_memory_use(status: Option<File>) {
    use std::io::{Read, Seek};
    let Some(mut file) = status else {
        return;
    };
    let mut status = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut status).is_err() {
        return;
    }
    let fields: Vec<&str> = status
        .lines()
        .filter(|l| {
            ["VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"]
                .iter()
                .any(|k| l.starts_with(&format!("{k}:")))
        })
        .collect();
    tracing::debug!("memory: {}", fields.join(", ").replace('\t', " "));
}

fn main() {
    let t0 = Instant::now();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(msg) => fail(&msg),
    };
    let level = if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        // SAFETY: isatty only inspects the fd.
        .with_ansi(unsafe { libc::isatty(2) } == 1)
        .init();

    let kernel = open("kernel", &args.kernel);
    let initrd = args.initrd.as_deref().map(|p| open("initrd", p));
    let set = block_signals();
    let name = std::path::Path::new(&args.kernel)
        .file_name()
        .map_or_else(|| "vm".to_string(), |n| n.to_string_lossy().into_owned());
    let cfg = VmConfig {
        name,
        memory: args.memory,
        vcpus: args.vcpus,
        kernel,
        initrd,
        cmdline: args.cmdline,
        disks: Vec::new(),
        console: Console::Stdio,
    };
    let (vm, handle) = match Vm::new(cfg) {
        Ok(v) => v,
        Err(e) => {
            let msg = vmd::error_chain(&e);
            match e {
                VmError::Kvm(_)
                | VmError::Start(_)
                | VmError::Signal(_)
                | VmError::Platform(_)
                | VmError::Acpi(_) => {
                    eprintln!("vm-run: {msg}");
                    std::process::exit(1);
                }
                _ => fail(&msg),
            }
        }
    };
    tracing::debug!("VM ready {} us after start", t0.elapsed().as_micros());
    let sig_handle = handle.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || signal_thread(set, sig_handle));
    // SAFETY: isatty only inspects the fd.
    let tty = unsafe { libc::isatty(std::io::stdin().as_raw_fd()) } == 1;
    let raw = tty.then(RawTerminal::enter);
    let status = args
        .verbose
        .then(|| File::open("/proc/self/status").ok())
        .flatten();
    // The same allow-list as a vm process of vmd: the VM is built, every
    // thread from here on (and the RTC's and signal threads) runs under it.
    if let Err(e) = privsep::sandbox::confine_vm() {
        drop(raw);
        eprintln!("vm-run: {}", vmd::error_chain(&e));
        std::process::exit(1);
    }
    let outcome = vm.run();
    drop(raw);
    tracing::debug!(
        "VM ended {} us after start: {outcome:?}",
        t0.elapsed().as_micros()
    );
    log_memory_use(status);
    std::process::exit(outcome.exit_code());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("x1M"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn flags_parse_attached_and_separate() {
        let a = args(&[
            "-m256M",
            "-C",
            "2",
            "-b",
            "k",
            "-I",
            "i",
            "-k",
            "console=ttyS0 quiet",
            "-v",
        ])
        .unwrap();
        assert_eq!((a.memory, a.vcpus, a.kernel.as_str()), (256 << 20, 2, "k"));
        assert_eq!(a.initrd.as_deref(), Some("i"));
        assert_eq!(a.cmdline, "console=ttyS0 quiet");
        assert!(a.verbose);
        let d = args(&["-b", "k"]).unwrap();
        assert_eq!((d.memory, d.vcpus), (512 << 20, 1));
    }

    #[test]
    fn bad_flags_are_refused_with_one_line() {
        assert_eq!(
            args(&["-m", "lots", "-b", "k"]).err().unwrap(),
            "invalid memory size 'lots'"
        );
        assert_eq!(
            args(&["-C", "0", "-b", "k"]).err().unwrap(),
            "invalid number of cpus '0'"
        );
        assert_eq!(args(&["-x"]).err().unwrap(), "unknown flag -x");
        assert_eq!(args(&["-b"]).err().unwrap(), "-b needs a value");
        assert_eq!(args(&[]).err().unwrap(), "a kernel is required (-b kernel)");
        assert_eq!(
            args(&["-b", "k", "-d", "disk.img"]).err().unwrap(),
            "disks (-d) are not yet supported"
        );
        assert_eq!(args(&["k"]).err().unwrap(), "unexpected argument 'k'");
    }
}
