//! The wire protocol of vmd and vmctl: every message the daemon's processes
//! and its clients exchange (vmd's `vmd.h` and the imsg types of `proc.h`).
//!
//! Read this crate and you know every request the daemon understands:
//!
//! - [`control`]: vmctl ⇄ the control process, over the control socket;
//! - [`internal`]: the daemon's own channels (parent ⇄ control,
//!   parent ⇄ vmm, vmm ⇄ vm);
//! - [`frame`]: how one message becomes one packet (version byte, postcard,
//!   size limit) and back;
//! - [`codes`]: result codes (errno values and vmd's private 1001..1007
//!   codes) and the messages vmctl prints for them.
//!
//! Every channel is a `SOCK_SEQPACKET` socket: one message is one packet,
//! so a message never needs its own length prefix. File descriptors travel
//! next to a message as `SCM_RIGHTS` (see the `privsep` crate); the message
//! says how many it carries ([`internal::FdCount`]) and the receiver checks.

pub mod codes;
pub mod control;
pub mod frame;
pub mod internal;

pub use codes::*;
pub use control::*;
pub use frame::{decode, encode, FrameError, MAX_FDS, MAX_FRAME, VERSION};

/// The control socket's default path (vmd's `SOCKET_NAME`).
pub const SOCKET_PATH: &str = "/var/run/vmd.sock";

/// The environment variable that overrides [`SOCKET_PATH`] for vmd and
/// vmctl (after `-s socket`).
pub const SOCKET_ENV: &str = "VMD_SOCKET";

/// The default configuration file (vmd's `VMD_CONF`).
pub const CONF_PATH: &str = "/etc/vm.conf";
