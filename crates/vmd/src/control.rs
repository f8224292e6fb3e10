//! The control process (vmd's `control.c`): runs as the unprivileged user,
//! accepts vmctl clients on the control socket, identifies each by
//! `SO_PEERCRED`, refuses root-only requests from other users, and relays
//! the rest to the parent. A client that sends garbage is disconnected;
//! the others never notice.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use privsep::{Channel, ChannelError, Listener};
use proto::internal::{ControlToParent, ParentToControl, PeerCred};
use proto::{Request, Response};

/// Most clients connected at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 512;

/// While this many messages wait for the parent, clients are not read
/// (back-pressure instead of an unbounded queue).
const MAX_QUEUED: usize = 1024;

/// Why the control process stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The parent sent something it must not, or its channel failed
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
    /// Messages for the parent that did not fit in the socket yet. The
    /// channel to the parent is non-blocking both ways, so control never
    /// waits on the parent while the parent waits on control.
    to_parent: VecDeque<ControlToParent>,
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
            to_parent: VecDeque::new(),
        }
    }

    /// Serves clients until the parent goes away (`Ok`) or misbehaves.
    pub fn run(mut self) -> Result<(), ControlError> {
        self.listener
            .set_nonblocking(true)
            .map_err(ControlError::Accept)?;
        self.parent
            .set_nonblocking(true)
            .map_err(ControlError::Parent)?;
        loop {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            let events = self.wait(&ids)?;
            let parent_ev = events[0];
            if parent_ev.contains(PollFlags::POLLOUT) {
                self.flush()?;
            }
            if parent_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                && !self.on_parent()?
            {
                return Ok(());
            }
            if !events[1].is_empty() {
                self.accept()?;
            }
            for (id, ev) in ids.into_iter().zip(&events[2..]) {
                if !ev.is_empty() {
                    self.on_client(id)?;
                }
            }
        }
    }

    /// Polls the parent, the listener and `ids`; their events in that
    /// order.
    fn wait(&self, ids: &[u64]) -> Result<Vec<PollFlags>, ControlError> {
        let mut parent_flags = PollFlags::POLLIN;
        if !self.to_parent.is_empty() {
            parent_flags |= PollFlags::POLLOUT;
        }
        let listen_flags = if self.clients.len() < MAX_CLIENTS {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let client_flags = if self.to_parent.len() < MAX_QUEUED {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let mut fds = Vec::with_capacity(2 + ids.len());
        fds.push(PollFd::new(self.parent.as_fd(), parent_flags));
        fds.push(PollFd::new(self.listener.as_fd(), listen_flags));
        for id in ids {
            fds.push(PollFd::new(self.clients[id].chan.as_fd(), client_flags));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(ControlError::Poll(e)),
        }
        Ok(fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect())
    }

    /// Handles one message from the parent; false when the parent is gone.
    fn on_parent(&mut self) -> Result<bool, ControlError> {
        match self.parent.recv_msg::<ParentToControl>() {
            Ok(ParentToControl::Reply { client, resp }) => {
                self.reply(client, &resp)?;
                Ok(true)
            }
            Ok(ParentToControl::Verbose(v)) => {
                crate::log::set_verbose(v);
                Ok(true)
            }
            Err(e) if e.would_block() => Ok(true),
            Err(ChannelError::Closed) => Ok(false),
            Err(e) => Err(ControlError::Parent(e)),
        }
    }

    /// Queues a message for the parent and sends what the socket takes.
    fn send_parent(&mut self, msg: ControlToParent) -> Result<(), ControlError> {
        self.to_parent.push_back(msg);
        self.flush()
    }

    /// Sends queued messages until the socket is full.
    fn flush(&mut self) -> Result<(), ControlError> {
        while let Some(msg) = self.to_parent.front() {
            match self.parent.send(msg, &[]) {
                Ok(()) => {
                    self.to_parent.pop_front();
                }
                Err(e) if e.would_block() => return Ok(()),
                Err(e) => return Err(ControlError::Parent(e)),
            }
        }
        Ok(())
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

    fn on_client(&mut self, id: u64) -> Result<(), ControlError> {
        let Some(client) = self.clients.get_mut(&id) else {
            return Ok(());
        };
        let peer = client.peer;
        match client.chan.recv_msg::<Request>() {
            Ok(req) => {
                if req.root_only() && peer.uid != 0 {
                    tracing::warn!("denied request {} from uid {}", req.name(), peer.uid);
                    return self.reply(id, &Response::Error { code: libc::EPERM });
                }
                self.send_parent(ControlToParent::Request {
                    client: id,
                    peer,
                    req,
                })
            }
            Err(e) if e.would_block() => Ok(()),
            Err(ChannelError::Closed) => self.drop_client(id),
            Err(e) => {
                tracing::warn!(
                    "control: client {id} (uid {}): {e}, disconnecting",
                    peer.uid
                );
                self.drop_client(id)
            }
        }
    }

    fn reply(&mut self, id: u64, resp: &Response) -> Result<(), ControlError> {
        let Some(client) = self.clients.get(&id) else {
            tracing::debug!("control: reply for departed client {id} dropped");
            return Ok(());
        };
        if let Err(e) = client.chan.send(resp, &[]) {
            // A client that does not read its replies is dropped.
            tracing::debug!("control: client {id}: {e}, disconnecting");
            return self.drop_client(id);
        }
        Ok(())
    }

    fn drop_client(&mut self, id: u64) -> Result<(), ControlError> {
        if self.clients.remove(&id).is_some() {
            tracing::debug!("control: client {id} disconnected");
            return self.send_parent(ControlToParent::Gone { client: id });
        }
        Ok(())
    }
}
