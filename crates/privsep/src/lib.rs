//! Privilege separation for vmd (OpenBSD's `proc.c`): typed channels over
//! `SOCK_SEQPACKET` sockets with descriptor passing, re-exec of the daemon
//! binary for each process role, and the steps that take a child's
//! privileges away (user, no_new_privs, seccomp, Landlock).

pub mod channel;
pub mod exec;
pub mod sandbox;
pub mod user;

pub use channel::{Channel, ChannelError, Listener};
pub use exec::{Child, ExecError, Role};
pub use user::{drop_privileges, UserError, VMD_USER};
