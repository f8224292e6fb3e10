//! Boots the tiny guests of `testguests` with `vm-run` on this machine's
//! /dev/kvm and checks their console output and the exit status of each
//! outcome (0 power off, 11 reboot, 1 failure, 2 bad flags or files).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

const VM_RUN: &str = env!("CARGO_BIN_EXE_vm-run");

fn kvm_available() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        // Under CI /dev/kvm is guaranteed: a skip there would let the test
        // pass without running.
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot run under CI: no /dev/kvm"
        );
        eprintln!("skipped: /dev/kvm is not available");
    }
    ok
}

fn vm_run(args: &[&str]) -> Output {
    Command::new(VM_RUN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vm-run")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn boot(guest: &str, extra: &[&str]) -> Output {
    let mut args = vec!["-m", "64M", "-b", guest];
    args.extend_from_slice(extra);
    vm_run(&args)
}

#[test]
fn pvh_guest_prints_and_powers_off_with_status_0() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::HELLO, &[]);
    assert_eq!(stdout(&o), "HELLO-PVH\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn elf_guest_without_pvh_note_boots_in_64bit_mode() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::HELLO64, &[]);
    assert_eq!(stdout(&o), "HELLO-64\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn reset_register_reboots_with_status_eagain() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::REBOOT, &[]);
    assert_eq!(stdout(&o), "REBOOT-CF9\n");
    assert_eq!(o.status.code(), Some(libc::EAGAIN));
}

#[test]
fn keyboard_controller_reset_reboots_with_status_eagain() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::REBOOT_KBD, &[]);
    assert_eq!(stdout(&o), "REBOOT-KBD\n");
    assert_eq!(o.status.code(), Some(libc::EAGAIN));
}

#[test]
fn triple_fault_reboots_with_status_eagain() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::TRIPLE, &[]);
    assert_eq!(stdout(&o), "TRIPLE\n");
    assert_eq!(
        o.status.code(),
        Some(libc::EAGAIN),
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn int3_in_kernel_mode_fails_with_a_register_dump_on_kvm_pvm() {
    if !kvm_available() {
        return;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    let o = boot(testguests::INT3, &[]);
    assert_eq!(stdout(&o), "INT3\n");
    if hardware {
        // With real virtualization int3 is delivered; with no IDT that is a triple fault.
        assert_eq!(o.status.code(), Some(libc::EAGAIN));
    } else {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "stderr: {err}");
        assert!(err.contains("KVM internal error"), "{err}");
        assert!(
            err.contains(" rip ") && err.contains("cr3 0x9000"),
            "no register dump: {err}"
        );
    }
}

#[test]
fn one_vcpu_guest_sees_one_cpu() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::CPUS, &["-C", "1"]);
    assert_eq!(stdout(&o), "CPUS=1 ONLINE=1\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn two_vcpu_guest_sees_and_starts_two_cpus() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::CPUS, &["-C", "2"]);
    assert_eq!(stdout(&o), "CPUS=2 ONLINE=2\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn four_vcpu_guest_starts_every_ap_with_init_sipi() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::CPUS, &["-C", "4"]);
    assert_eq!(stdout(&o), "CPUS=4 ONLINE=4\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn guest_poking_bad_ports_and_mmio_survives_and_powers_off() {
    if !kvm_available() {
        return;
    }
    let o = boot(testguests::BADIO, &[]);
    assert_eq!(stdout(&o), "BADIO-SURVIVED\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

/// Starts the idle guest and waits for its ready marker.
fn start_idle() -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    start_waiting(testguests::IDLE, "IDLE-READY\n")
}

/// Starts a guest that waits for the power button, and waits for `marker`.
fn start_waiting(
    guest: &str,
    marker: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(VM_RUN)
        .args(["-m", "64M", "-b", guest])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vm-run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read marker");
    assert_eq!(line, marker);
    (child, out)
}

#[test]
fn power_button_sci_reaches_a_guest_through_the_ioapic() {
    if !kvm_available() {
        return;
    }
    let (mut child, mut out) = start_waiting(testguests::IDLE_IOAPIC, "IOAPIC-READY\n");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "POWER-BUTTON\n");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_presses_the_power_button_and_the_guest_shuts_down() {
    if !kvm_available() {
        return;
    }
    let (mut child, mut out) = start_idle();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "POWER-BUTTON\n");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigint_terminates_the_vm_without_the_guest_noticing() {
    if !kvm_available() {
        return;
    }
    let (mut child, mut out) = start_idle();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "", "the guest must not have seen a power button");
    assert_eq!(status.code(), Some(0));
}

fn assert_refused(o: &Output, message: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    assert_eq!(stderr(o), format!("vm-run: {message}\n"));
    assert_eq!(stdout(o), "");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    assert_refused(
        &vm_run(&["-m", "lots", "-b", "k"]),
        "invalid memory size 'lots'",
    );
    assert_refused(
        &vm_run(&["-C", "x", "-b", "k"]),
        "invalid number of cpus 'x'",
    );
    assert_refused(&vm_run(&["-q"]), "unknown flag -q");
    assert_refused(&vm_run(&[]), "a kernel is required (-b kernel)");
    assert_refused(
        &vm_run(&["-b", testguests::HELLO, "-d", "/dev/null"]),
        "disks (-d) are not yet supported",
    );
}

#[test]
fn missing_files_exit_2_with_one_line() {
    assert_refused(
        &vm_run(&["-b", "/nonexistent/kernel"]),
        "kernel /nonexistent/kernel: No such file or directory (os error 2)",
    );
    assert_refused(
        &vm_run(&["-b", testguests::HELLO, "-I", "/nonexistent/initrd"]),
        "initrd /nonexistent/initrd: No such file or directory (os error 2)",
    );
    assert_refused(&vm_run(&["-b", "/"]), "kernel /: not a regular file");
}

#[test]
fn unusable_kernel_cmdline_initrd_and_memory_exit_2() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a kernel\n").unwrap();
    assert_refused(
        &vm_run(&["-b", text.to_str().unwrap()]),
        "not a kernel (neither a bzImage nor an ELF or gzip'd ELF image)",
    );
    let long = "x".repeat(4000);
    assert_refused(
        &vm_run(&["-b", testguests::HELLO, "-k", &long]),
        "kernel command line too long (4000 bytes, at most 2047)",
    );
    let big = dir.path().join("initrd");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    assert_refused(
        &vm_run(&[
            "-m",
            "64M",
            "-b",
            testguests::HELLO,
            "-I",
            big.to_str().unwrap(),
        ]),
        &format!(
            "initrd of {} bytes does not fit in guest memory",
            100u64 << 20
        ),
    );
    assert_refused(
        &vm_run(&["-m", "900T", "-b", testguests::HELLO]),
        "could not allocate guest memory: Cannot allocate memory (os error 12)",
    );
}

/// Starts the echo guest with a piped stdin and waits for its marker.
fn start_echo() -> (
    std::process::Child,
    std::process::ChildStdin,
    BufReader<std::process::ChildStdout>,
) {
    let mut child = Command::new(VM_RUN)
        .args(["-m", "64M", "-b", testguests::ECHO])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vm-run");
    let stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read marker");
    assert_eq!(line, "ECHO-READY\n");
    (child, stdin, out)
}

#[test]
fn console_input_reaches_the_guest() {
    if !kvm_available() {
        return;
    }
    use std::io::Write;
    let (mut child, mut stdin, mut out) = start_echo();
    stdin.write_all(b"hello, guest q").expect("write");
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "hello, guest q\n");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn console_input_larger_than_the_uart_fifo_arrives_whole_and_in_order() {
    if !kvm_available() {
        return;
    }
    use std::io::Write;
    let (mut child, mut stdin, mut out) = start_echo();
    // 1000 bytes: many times the 64-byte FIFO, so the input thread must
    // wait for the guest to drain it.
    let text: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let text = text.replace('q', "-");
    stdin.write_all(text.as_bytes()).expect("write");
    stdin.write_all(b"q").expect("write");
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, format!("{text}q\n"));
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn e820_map_has_the_low_hole_and_puts_ram_above_4g_for_big_guests() {
    if !kvm_available() {
        return;
    }
    // 64 MiB: everything below 4 GiB, minus the 640 KiB-1 MiB hole.
    let o = vm_run(&["-m", "64M", "-b", testguests::MEM]);
    assert_eq!(
        stdout(&o),
        "E820-RAM-KB=65152 TOP-KB=65536\n",
        "stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
    // 5 GiB: 3 GiB below the PCI hole, 2 GiB from 4 GiB up (memory is lazy).
    let o = vm_run(&["-m", "5G", "-b", testguests::MEM]);
    assert_eq!(
        stdout(&o),
        format!("E820-RAM-KB={} TOP-KB={}\n", (5 << 20) - 384, 6 << 20),
        "stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}
