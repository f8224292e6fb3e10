//! vmd for Linux/KVM: the daemon's process roles (vmd's `vmd.c`, `control.c`,
//! `vmm.c`, `vm.c`, `priv.c`), one module each, shared by the `vmd` binary
//! and the foreground runner `vm-run`.

pub mod args;
pub mod conf;
pub mod control;
pub mod log;
pub mod parent;
pub mod vm;
pub mod vm_proc;
pub mod vmm;

mod children;

pub use children::{ignore_terminal_signals, run_child};

/// An error and its sources on one line: `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
