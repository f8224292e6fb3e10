//! One measured VMM run: spawn the process, timestamp the guest's console
//! markers as they arrive on its stdout, reap it with `wait4` for its peak
//! RSS. No vmd counterpart (vmd has no benchmarks).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the console to reach end-of-file once the process
/// has exited (its last bytes may still be in the pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest console line kept for marker matching; longer lines are cut.
const MAX_LINE: usize = 4096;

/// What to run and what to look for.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The VMM executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where to copy the console (stdout); stderr goes to the same path with
    /// `.stderr` appended. `None` discards both.
    pub console_log: Option<PathBuf>,
    /// The marker that means the guest reached init.
    pub ready_marker: String,
    /// The marker the guest prints right before powering off.
    pub poweroff_marker: String,
    /// Limit from the start to the poweroff marker.
    pub boot_timeout: Duration,
    /// Limit from the poweroff marker to the process's exit.
    pub exit_timeout: Duration,
    /// The guest's memory size in bytes: mappings at least half this big
    /// count as guest RAM when the VMM's own RSS is taken at poweroff.
    pub guest_mem_bytes: u64,
}

/// The figures of one successful run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Process start to the ready marker on the console.
    pub boot: Duration,
    /// The poweroff marker on the console to the process's exit.
    pub poweroff_to_exit: Duration,
    /// Peak resident set size of the process, in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// Resident KiB outside the guest RAM mapping(s), read from
    /// /proc/PID/smaps when the poweroff marker arrives: the VMM's own
    /// memory. `None` if the process was already gone.
    pub vmm_rss_kib: Option<u64>,
}

/// Why a run produced no sample.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Cannot start {0}
    #[error("cannot start {0}")]
    Spawn(String, #[source] io::Error),
    /// Cannot create the console log {0}
    #[error("cannot create the console log {0}")]
    Log(String, #[source] io::Error),
    /// No {marker} on the console within {timeout:?} (killed)
    #[error("no {marker} on the console within {timeout:?} (killed)")]
    MarkerTimeout { marker: String, timeout: Duration },
    /// Exited ({status}) before {marker} appeared on the console
    #[error("exited ({status}) before {marker} appeared on the console")]
    ExitedEarly { marker: String, status: ExitStatus },
    /// Still running {0:?} after the guest powered off (killed)
    #[error("still running {0:?} after the guest powered off (killed)")]
    ExitTimeout(Duration),
    /// Exited with {0} after the guest powered off
    #[error("exited with {0} after the guest powered off")]
    BadExit(ExitStatus),
    /// wait4 failed
    #[error("wait4 failed")]
    Wait(#[source] io::Error),
}

/// A decoded wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal exit with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    fn from_raw(raw: i32) -> Self {
        if libc::WIFEXITED(raw) {
            ExitStatus::Code(libc::WEXITSTATUS(raw))
        } else {
            ExitStatus::Signal(libc::WTERMSIG(raw))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "status {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Finds whole lines containing any of a set of markers in a byte stream
/// that arrives in arbitrary chunks. Each marker is reported once.
#[derive(Debug)]
pub struct MarkerScanner {
    markers: Vec<String>,
    seen: Vec<bool>,
    line: Vec<u8>,
}

impl MarkerScanner {
    /// A scanner for these markers.
    pub fn new(markers: Vec<String>) -> Self {
        let seen = vec![false; markers.len()];
        MarkerScanner {
            markers,
            seen,
            line: Vec::new(),
        }
    }

    /// Feeds a chunk; returns the indices of the markers completed by it,
    /// in the order their lines ended.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&self.line);
                for (i, m) in self.markers.iter().enumerate() {
                    if !self.seen[i] && text.contains(m.as_str()) {
                        self.seen[i] = true;
                        found.push(i);
                    }
                }
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        found
    }
}

enum Event {
    Marker(usize, Instant),
    Eof,
    Exited {
        at: Instant,
        raw_status: i32,
        max_rss_kib: u64,
    },
    WaitFailed(io::Error),
}

const READY: usize = 0;
const POWEROFF: usize = 1;

/// Runs the VMM once and measures it.
pub fn run_once(spec: &RunSpec) -> Result<Sample, MeasureError> {
    let (console, stderr) = match &spec.console_log {
        Some(path) => {
            let err_path = PathBuf::from(format!("{}.stderr", path.display()));
            let console =
                File::create(path).map_err(|e| MeasureError::Log(path.display().to_string(), e))?;
            let stderr = File::create(&err_path)
                .map_err(|e| MeasureError::Log(err_path.display().to_string(), e))?;
            (Some(console), Stdio::from(stderr))
        }
        None => (None, Stdio::null()),
    };

    let start = Instant::now();
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| MeasureError::Spawn(spec.program.display().to_string(), e))?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().expect("stdout was set to piped");

    let (tx, rx) = mpsc::channel();
    let markers = vec![spec.ready_marker.clone(), spec.poweroff_marker.clone()];
    let reader_tx = tx.clone();
    thread::spawn(move || read_console(stdout, console, markers, reader_tx));
    thread::spawn(move || reap(pid, tx));

    let outcome = wait_for_outcome(spec, pid, start, &rx);
    if outcome.is_err() {
        kill_and_reap(pid, &rx);
    }
    outcome
}

fn read_console(
    mut stdout: impl Read,
    mut log: Option<File>,
    markers: Vec<String>,
    tx: Sender<Event>,
) {
    let mut scanner = MarkerScanner::new(markers);
    let mut buf = [0u8; 4096];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let now = Instant::now();
                for i in scanner.feed(&buf[..n]) {
                    let _ = tx.send(Event::Marker(i, now));
                }
                if let Some(f) = log.as_mut() {
                    // A log that cannot be written must not stop the run.
                    let _ = f.write_all(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::Eof);
}

fn reap(pid: libc::pid_t, tx: Sender<Event>) {
    loop {
        let mut raw_status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, which nothing else waits for; both
        // out-pointers are valid for writes for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut raw_status, 0, &mut usage) };
        let at = Instant::now();
        if r == pid {
            let max_rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            let _ = tx.send(Event::Exited {
                at,
                raw_status,
                max_rss_kib,
            });
            return;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            let _ = tx.send(Event::WaitFailed(err));
            return;
        }
    }
}

/// Kills the VMM after a failed run and waits until it has been reaped, so
/// that no run overlaps the next one.
fn kill_and_reap(pid: libc::pid_t, rx: &Receiver<Event>) {
    // SAFETY: kill has no memory effects; pid is our child, not yet reaped
    // unless its Exited event is already queued, and then the signal only
    // fails with ESRCH (the pid cannot be reused before wait4 returned).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while let Ok(ev) = rx.recv() {
        if matches!(ev, Event::Exited { .. } | Event::WaitFailed(_)) {
            break;
        }
    }
}

/// Sums the `Rss:` of every mapping in a /proc/PID/smaps text except those
/// of at least `guest_min_bytes` (the guest's RAM); `None` if the text has
/// no mappings.
pub fn rss_outside_guest_kib(smaps: &str, guest_min_bytes: u64) -> Option<u64> {
    let mut total = 0u64;
    let mut mappings = 0usize;
    let mut in_guest = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                in_guest = hi.saturating_sub(lo) >= guest_min_bytes;
                mappings += 1;
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kib = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
            if !in_guest {
                total += kib;
            }
        }
    }
    (mappings > 0).then_some(total)
}

fn wait_for_outcome(
    spec: &RunSpec,
    pid: libc::pid_t,
    start: Instant,
    rx: &Receiver<Event>,
) -> Result<Sample, MeasureError> {
    let mut ready = None;
    let mut poweroff: Option<Instant> = None;
    let mut exited: Option<(Instant, i32, u64)> = None;
    let mut vmm_rss_kib = None;
    let mut eof = false;
    loop {
        if let Some((at, raw_status, max_rss_kib)) = exited {
            // The process is gone: its console may still hold the markers.
            if !eof && at.elapsed() < DRAIN_TIMEOUT {
                match rx.recv_timeout(DRAIN_TIMEOUT.saturating_sub(at.elapsed())) {
                    Ok(Event::Marker(READY, t)) => ready = ready.or(Some(t)),
                    Ok(Event::Marker(_, t)) => poweroff = poweroff.or(Some(t)),
                    Ok(Event::Eof) | Err(_) => eof = true,
                    Ok(_) => {}
                }
                continue;
            }
            let status = ExitStatus::from_raw(raw_status);
            let (Some(ready), Some(poweroff)) = (ready, poweroff) else {
                let marker = if ready.is_none() {
                    &spec.ready_marker
                } else {
                    &spec.poweroff_marker
                };
                return Err(MeasureError::ExitedEarly {
                    marker: marker.clone(),
                    status,
                });
            };
            if status != ExitStatus::Code(0) {
                return Err(MeasureError::BadExit(status));
            }
            return Ok(Sample {
                boot: ready.duration_since(start),
                poweroff_to_exit: at.saturating_duration_since(poweroff),
                max_rss_kib,
                vmm_rss_kib,
            });
        }
        let deadline = match poweroff {
            None => start + spec.boot_timeout,
            Some(t) => t + spec.exit_timeout,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::Marker(READY, t)) => ready = Some(t),
            Ok(Event::Marker(POWEROFF, t)) => {
                poweroff = Some(t);
                if exited.is_none() {
                    vmm_rss_kib = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
                        .ok()
                        .and_then(|smaps| rss_outside_guest_kib(&smaps, spec.guest_mem_bytes / 2));
                }
            }
            Ok(Event::Marker(..)) => {}
            Ok(Event::Eof) => eof = true,
            Ok(Event::Exited {
                at,
                raw_status,
                max_rss_kib,
            }) => exited = Some((at, raw_status, max_rss_kib)),
            Ok(Event::WaitFailed(e)) => return Err(MeasureError::Wait(e)),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                return Err(match poweroff {
                    Some(_) => MeasureError::ExitTimeout(spec.exit_timeout),
                    None => MeasureError::MarkerTimeout {
                        marker: if ready.is_none() {
                            spec.ready_marker.clone()
                        } else {
                            spec.poweroff_marker.clone()
                        },
                        timeout: spec.boot_timeout,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> MarkerScanner {
        MarkerScanner::new(vec!["GUEST-READY".into(), "GUEST-POWEROFF".into()])
    }

    #[test]
    fn scanner_finds_marker_split_across_chunks() {
        let mut s = scanner();
        assert!(s.feed(b"noise\r\nGUEST-RE").is_empty());
        assert_eq!(s.feed(b"ADY\r\n"), vec![0]);
    }

    #[test]
    fn scanner_needs_the_end_of_the_line() {
        let mut s = scanner();
        assert!(s.feed(b"GUEST-POWEROFF").is_empty());
        assert_eq!(s.feed(b"\n"), vec![1]);
    }

    #[test]
    fn scanner_reports_each_marker_once_in_line_order() {
        let mut s = scanner();
        assert_eq!(
            s.feed(b"GUEST-POWEROFF\nGUEST-READY\nGUEST-READY\n"),
            vec![1, 0]
        );
        assert!(s.feed(b"GUEST-POWEROFF\n").is_empty());
    }

    #[test]
    fn scanner_reports_one_line_for_two_equal_markers() {
        let mut s = MarkerScanner::new(vec!["HELLO-PVH".into(), "HELLO-PVH".into()]);
        assert_eq!(s.feed(b"HELLO-PVH\n"), vec![0, 1]);
    }

    #[test]
    fn scanner_bounds_long_lines() {
        let mut s = scanner();
        let long = vec![b'x'; MAX_LINE * 4];
        assert!(s.feed(&long).is_empty());
        assert!(s.line.len() <= MAX_LINE);
        // The marker past the cut is lost, the next line is scanned afresh.
        assert!(s.feed(b"GUEST-READY\nGUEST-READY\n") == vec![0]);
    }

    fn sh(script: &str, dir: &std::path::Path) -> RunSpec {
        RunSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            console_log: Some(dir.join("console.log")),
            ready_marker: "GUEST-READY".into(),
            poweroff_marker: "GUEST-POWEROFF".into(),
            boot_timeout: Duration::from_secs(30),
            exit_timeout: Duration::from_secs(30),
            guest_mem_bytes: 256 << 20,
        }
    }

    #[test]
    fn run_once_measures_a_process_that_prints_both_markers() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sh(
            "echo booting; sleep 0.2; echo GUEST-READY; sleep 0.2; echo GUEST-POWEROFF",
            dir.path(),
        );
        let sample = run_once(&spec).unwrap();
        // The markers are 0.2 s apart, so boot time covers the first sleep.
        assert!(sample.boot >= Duration::from_millis(200), "{sample:?}");
        assert!(sample.max_rss_kib > 0);
        let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert_eq!(log, "booting\nGUEST-READY\nGUEST-POWEROFF\n");
    }

    #[test]
    fn smaps_rss_leaves_out_the_guest_mapping() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/vmm
Size:               1024 kB
Rss:                 600 kB
7f0000000000-7f0010000000 rw-s 00000000 00:01 5678 /memfd:guest (deleted)
Size:             262144 kB
Rss:              100000 kB
7fff00000000-7fff00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Rss:                  40 kB
";
        assert_eq!(rss_outside_guest_kib(smaps, 128 << 20), Some(640));
        // With a threshold above every mapping, everything counts.
        assert_eq!(rss_outside_guest_kib(smaps, 1 << 40), Some(100_640));
        assert_eq!(rss_outside_guest_kib("", 1), None);
    }

    #[test]
    fn run_once_reads_the_vmm_rss_at_poweroff() {
        let dir = tempfile::tempdir().unwrap();
        // The process lingers after the marker, so its smaps can be read.
        let spec = sh(
            "echo GUEST-READY; echo GUEST-POWEROFF; sleep 0.5",
            dir.path(),
        );
        let sample = run_once(&spec).unwrap();
        assert!(sample.vmm_rss_kib.is_some_and(|k| k > 0), "{sample:?}");
    }

    #[test]
    fn run_once_counts_poweroff_to_exit_from_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sh(
            "echo GUEST-READY; echo GUEST-POWEROFF; sleep 0.3",
            dir.path(),
        );
        let sample = run_once(&spec).unwrap();
        assert!(
            sample.poweroff_to_exit >= Duration::from_millis(300),
            "{sample:?}"
        );
    }

    #[test]
    fn run_once_reports_an_exit_before_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_once(&sh("echo GUEST-READY; exit 3", dir.path())).unwrap_err();
        match err {
            MeasureError::ExitedEarly { marker, status } => {
                assert_eq!(marker, "GUEST-POWEROFF");
                assert_eq!(status, ExitStatus::Code(3));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn run_once_reports_a_failure_status_after_poweroff() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_once(&sh(
            "echo GUEST-READY; echo GUEST-POWEROFF; exit 1",
            dir.path(),
        ))
        .unwrap_err();
        assert!(
            matches!(err, MeasureError::BadExit(ExitStatus::Code(1))),
            "{err:?}"
        );
    }

    #[test]
    fn run_once_kills_a_vmm_that_never_boots() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!("echo $$ > {}/pid && exec sleep 1000", dir.path().display());
        let mut spec = sh(&script, dir.path());
        spec.boot_timeout = Duration::from_millis(300);
        let err = run_once(&spec).unwrap_err();
        assert!(matches!(err, MeasureError::MarkerTimeout { .. }), "{err:?}");
        let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Reaped: the pid no longer names a process of ours.
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    }

    #[test]
    fn run_once_kills_a_vmm_that_does_not_exit_after_poweroff() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh(
            "echo GUEST-READY; echo GUEST-POWEROFF; exec sleep 1000",
            dir.path(),
        );
        spec.exit_timeout = Duration::from_millis(300);
        let err = run_once(&spec).unwrap_err();
        assert!(matches!(err, MeasureError::ExitTimeout(_)), "{err:?}");
    }

    #[test]
    fn run_once_reports_a_missing_program() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh("", dir.path());
        spec.program = dir.path().join("no-such-vmm");
        assert!(matches!(run_once(&spec), Err(MeasureError::Spawn(..))));
    }
}
