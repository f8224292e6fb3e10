//! The control process (vmd's `control.c`): runs as the unprivileged user,
//! accepts vmctl clients on the control socket, identifies each by
//! `SO_PEERCRED`, refuses root-only requests from other users, and relays
//! the rest to the parent. A client that sends garbage is disconnected;
//! the others never notice.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use privsep::{Channel, ChannelError, Listener};
use proto::internal::{ControlToParent, ParentToControl, PeerCred};
use proto::{Request, Response};

/// Most clients connected at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 512;

/// Why the control process stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The parent sent something it must not
    #[error("bad message from the parent")]
    Parent(#[source] ChannelError),
    /// poll failed
    #[error("poll failed")]
    Poll(#[source] Errno),
    /// Accepting a client failed in a way that will not go away
    #[error("accept failed")]
    Accept(#[source] ChannelError),
}

struct Client {
    chan: Channel,
    peer: PeerCred,
}

/// The control process's state.
pub struct Control {
    parent: Channel,
    listener: Listener,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
}

impl Control {
    /// A control process with its channel to the parent and the
    /// listening socket the parent bound.
    pub fn new(parent: Channel, listener: Listener) -> Self {
        Control {
            parent,
            listener,
            clients: BTreeMap::new(),
            next_client: 1,
        }
    }

    /// Serves clients until the parent goes away (`Ok`) or misbehaves.
    pub fn run(mut self) -> Result<(), ControlError> {
        self.listener
            .set_nonblocking(true)
            .map_err(ControlError::Accept)?;
        loop {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            let (parent_ev, listen_ev, client_ev) = {
                let mut fds = Vec::with_capacity(2 + ids.len());
                fds.push(PollFd::new(self.parent.as_fd(), PollFlags::POLLIN));
                let listen_flags = if self.clients.len() < MAX_CLIENTS {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                };
                fds.push(PollFd::new(self.listener.as_fd(), listen_flags));
                for id in &ids {
                    fds.push(PollFd::new(
                        self.clients[id].chan.as_fd(),
                        PollFlags::POLLIN,
                    ));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(ControlError::Poll(e)),
                }
                let ev: Vec<PollFlags> = fds
                    .iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                (ev[0], ev[1], ev[2..].to_vec())
            };
            if !parent_ev.is_empty() && !self.on_parent()? {
                return Ok(());
            }
            if !listen_ev.is_empty() {
                self.accept()?;
            }
            for (id, ev) in ids.into_iter().zip(client_ev) {
                if !ev.is_empty() {
                    self.on_client(id);
                }
            }
        }
    }

    /// Handles one message from the parent; false when the parent is gone.
    fn on_parent(&mut self) -> Result<bool, ControlError> {
        match self.parent.recv_msg::<ParentToControl>() {
            Ok(ParentToControl::Reply { client, resp }) => {
                self.reply(client, &resp);
                Ok(true)
            }
            Ok(ParentToControl::Verbose(v)) => {
                crate::log::set_verbose(v);
                Ok(true)
            }
            Err(ChannelError::Closed) => Ok(false),
            Err(e) => Err(ControlError::Parent(e)),
        }
    }

    fn accept(&mut self) -> Result<(), ControlError> {
        loop {
            let chan = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.would_block() => return Ok(()),
                Err(ChannelError::Io(
                    Errno::ECONNABORTED | Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS,
                )) => {
                    tracing::warn!("control: accept: out of resources or aborted");
                    return Ok(());
                }
                Err(e) => return Err(ControlError::Accept(e)),
            };
            let peer = match privsep::channel::peer_cred(chan.as_fd()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("control: no peer credentials: {e}");
                    continue;
                }
            };
            let id = self.next_client;
            self.next_client += 1;
            tracing::debug!(
                "control: client {id} connected (uid {}, pid {})",
                peer.uid,
                peer.pid
            );
            self.clients.insert(id, Client { chan, peer });
            if self.clients.len() >= MAX_CLIENTS {
                return Ok(());
            }
        }
    }

    fn on_client(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let peer = client.peer;
        match client.chan.recv_msg::<Request>() {
            Ok(req) => {
                if req.root_only() && peer.uid != 0 {
                    tracing::warn!("denied request {} from uid {}", req.name(), peer.uid);
                    self.reply(id, &Response::Error { code: libc::EPERM });
                    return;
                }
                let msg = ControlToParent::Request {
                    client: id,
                    peer,
                    req,
                };
                if let Err(e) = self.parent.send(&msg, &[]) {
                    tracing::warn!("control: could not relay a request: {e}");
                }
            }
            Err(e) if e.would_block() => {}
            Err(ChannelError::Closed) => self.drop_client(id),
            Err(e) => {
                tracing::warn!(
                    "control: client {id} (uid {}): {e}, disconnecting",
                    peer.uid
                );
                self.drop_client(id);
            }
        }
    }

    fn reply(&mut self, id: u64, resp: &Response) {
        let Some(client) = self.clients.get(&id) else {
            tracing::debug!("control: reply for departed client {id} dropped");
            return;
        };
        if let Err(e) = client.chan.send(resp, &[]) {
            // A client that does not read its replies is dropped.
            tracing::debug!("control: client {id}: {e}, disconnecting");
            self.drop_client(id);
        }
    }

    fn drop_client(&mut self, id: u64) {
        if self.clients.remove(&id).is_some() {
            tracing::debug!("control: client {id} disconnected");
            let _ = self.parent.send(&ControlToParent::Gone { client: id }, &[]);
        }
    }
}
