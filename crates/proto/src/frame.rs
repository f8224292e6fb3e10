//! One message per packet: a protocol version byte followed by the message
//! in postcard's compact encoding (the role of imsg's header in vmd's
//! `proc.c`, without raw structs on the wire).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The protocol version, the first byte of every packet. Bumped whenever a
/// message changes shape, so a vmctl and a vmd of different builds refuse
/// each other with a clear error instead of misreading.
pub const VERSION: u8 = 1;

/// The largest packet, version byte included. A status reply with a few
/// thousand VMs fits; anything bigger is a peer that misbehaves. Below the
/// default socket buffer size (`net.core.wmem_default`), so one packet
/// always fits in a `SOCK_SEQPACKET` send.
pub const MAX_FRAME: usize = 128 * 1024;

/// The most file descriptors one message may carry (tty, kernel, initrd,
/// 4 disks with 4 base images each, cdrom, interfaces — with room).
pub const MAX_FDS: usize = 32;

/// Why a packet could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Empty packet
    #[error("empty packet")]
    Empty,
    /// The peer speaks another protocol version
    #[error("protocol version {found} not supported (expected {VERSION})")]
    Version {
        /// The version byte received.
        found: u8,
    },
    /// The packet is larger than the protocol allows
    #[error("packet of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    TooLarge(usize),
    /// The payload is not a valid message of this channel
    #[error("malformed message")]
    Malformed(#[source] postcard::Error),
    /// Bytes are left over after a complete message
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encodes `msg` as one packet: the version byte, then the message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let buf = postcard::to_extend(msg, vec![VERSION]).map_err(FrameError::Malformed)?;
    if buf.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(buf.len()));
    }
    Ok(buf)
}

/// Decodes one packet into a message of type `T`, checking the version,
/// the size limit and that nothing follows the message.
pub fn decode<T: DeserializeOwned>(packet: &[u8]) -> Result<T, FrameError> {
    if packet.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(packet.len()));
    }
    let (&version, payload) = packet.split_first().ok_or(FrameError::Empty)?;
    if version != VERSION {
        return Err(FrameError::Version { found: version });
    }
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(msg)
}
