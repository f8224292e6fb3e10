//! The runtime's library interface on a real VM: pause, resume and
//! terminate through a `VmHandle` while `Vm::run` blocks on another thread,
//! with the console on a socket as the daemon gives it a pty.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vmd::vm::{Console, Error, Vm, VmConfig, VmOutcome};

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

fn config(guest: &str, console: UnixStream) -> VmConfig {
    VmConfig {
        name: "control-test".into(),
        memory: 64 << 20,
        vcpus: 2,
        kernel: std::fs::File::open(guest).expect("guest image"),
        initrd: None,
        cmdline: String::new(),
        disks: Vec::new(),
        console: Console::Fd(console.into()),
    }
}

/// Reads until `n` bytes arrived (blocking socket).
fn read_at_least(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        let k = s.read(&mut buf).expect("read console");
        assert!(k > 0, "console closed");
        got.extend_from_slice(&buf[..k]);
    }
    got
}

/// Reads whatever is queued without blocking.
fn drain(s: &mut UnixStream) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => total += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    total
}

#[test]
fn paused_vm_prints_nothing_until_resumed_and_terminate_ends_run() {
    if !kvm_available() {
        return;
    }
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (vm, handle) = Vm::new(config(testguests::TICKER, theirs)).expect("build VM");
    assert!(
        matches!(handle.pause(), Err(Error::NotRunning)),
        "not started yet"
    );
    let runner = std::thread::spawn(move || vm.run());

    let first = read_at_least(&mut ours, 200);
    assert!(first.starts_with(b"TICK-READY\n"));
    handle.pause().expect("pause");
    handle.pause().expect("pausing twice is fine");
    // Every vCPU acknowledged: whatever the guest wrote is already queued.
    drain(&mut ours);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(drain(&mut ours), 0, "a paused guest wrote to its console");

    handle.resume().expect("resume");
    handle.resume().expect("resuming a running VM is fine");
    let more = read_at_least(&mut ours, 100);
    assert!(more.iter().all(|&b| b == b'.'));

    handle.terminate();
    assert_eq!(runner.join().expect("run thread"), VmOutcome::Terminated);
    assert!(matches!(handle.pause(), Err(Error::NotRunning)));
    assert!(matches!(handle.resume(), Err(Error::NotRunning)));
}

#[test]
fn terminate_ends_a_paused_vm() {
    if !kvm_available() {
        return;
    }
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (vm, handle) = Vm::new(config(testguests::TICKER, theirs)).expect("build VM");
    let runner = std::thread::spawn(move || vm.run());
    read_at_least(&mut ours, 20);
    handle.pause().expect("pause");
    handle.terminate();
    assert_eq!(runner.join().expect("run thread"), VmOutcome::Terminated);
}

#[test]
fn guest_power_off_is_the_outcome_with_a_kvm_fd_passed_in() {
    if !kvm_available() {
        return;
    }
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .unwrap();
    let (vm, _handle) =
        Vm::new_with_kvm(config(testguests::HELLO, theirs), Some(kvm.into())).expect("build VM");
    assert_eq!(vm.run(), VmOutcome::PowerOff);
    assert_eq!(read_at_least(&mut ours, 10), b"HELLO-PVH\n");
}
