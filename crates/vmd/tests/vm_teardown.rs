//! A finished VM releases everything: after `run` returns and the handle is
//! dropped, the process has the same descriptors as before (the KVM VM,
//! vCPU, memfd, eventfd and console descriptors are all closed). Alone in
//! its test binary so that nothing else opens descriptors meanwhile.

use std::os::unix::net::UnixStream;

use vmd::vm::{Console, Vm, VmConfig, VmOutcome};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn an_ended_vm_leaves_no_descriptor_open() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        // Under CI /dev/kvm is guaranteed: a skip there would let the test
        // pass without running.
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot run under CI: no /dev/kvm"
        );
        eprintln!("skipped: /dev/kvm is not available");
        return;
    }
    // One VM first, so one-time process state (the kick signal handler,
    // the logger) is not counted.
    let run_one = |guest: &str| {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let (vm, handle) = Vm::new(VmConfig {
            name: "teardown".into(),
            memory: 64 << 20,
            vcpus: 2,
            kernel: std::fs::File::open(guest).unwrap(),
            initrd: None,
            cmdline: String::new(),
            disks: Vec::new(),
            console: Console::Fd(theirs.into()),
        })
        .expect("build VM");
        let outcome = vm.run();
        drop(handle);
        outcome
    };
    assert_eq!(run_one(testguests::HELLO), VmOutcome::PowerOff);
    let before = open_fds();
    assert_eq!(run_one(testguests::REBOOT), VmOutcome::Reboot);
    assert_eq!(run_one(testguests::CPUS), VmOutcome::PowerOff);
    assert_eq!(open_fds(), before, "descriptors leaked by an ended VM");
}
