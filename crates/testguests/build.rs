//! Assembles the tiny guests in `guests/` with binutils (`as`, `ld`) into
//! ELF64 files under OUT_DIR.

use std::path::{Path, PathBuf};
use std::process::Command;

const PVH: &[&str] = &["hello"];
const LONG: &[&str] = &[
    "hello64",
    "reboot",
    "reboot-kbd",
    "triple",
    "int3",
    "cpus",
    "idle",
    "badio",
    "echo",
    "ticker",
    "mem",
    "idle-ioapic",
];

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install binutils)"));
    assert!(status.success(), "{cmd:?} failed");
}

fn build(src: &Path, out: &Path, name: &str, script: &str) {
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    run(Command::new("as")
        .arg("--64")
        .arg("-I")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .arg(src.join(format!("{name}.S"))));
    run(Command::new("ld")
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "-static",
            "--build-id=none",
            "--no-warn-rwx-segments",
            "-T",
        ])
        .arg(src.join(script))
        .arg("-o")
        .arg(&elf)
        .arg(&obj));
}

fn main() {
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=guests");
    for name in PVH {
        build(&src, &out, name, "guest-pvh.ld");
    }
    for name in LONG {
        build(&src, &out, name, "guest.ld");
    }
}
