//! The parent process (vmd's `vmd.c`): configuration, the VM registry,
//! permission checks, and every file opened on a requester's behalf.

pub mod registry;
