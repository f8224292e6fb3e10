//! The parent process (vmd's `vmd.c`): configuration, the VM registry,
//! permission checks, and every file opened on a requester's behalf.
//!
//! It runs as root, starts the control and vmm children, and then serves
//! one event loop: signals (SIGCHLD, SIGTERM/SIGINT, SIGHUP), requests
//! relayed by control, reports from vmm, and the staggered-start timer.
//! The registry ([`registry`]) decides; this module carries out.

pub mod registry;
pub mod tty;

mod daemon;
mod dispatch;

pub use daemon::main;
