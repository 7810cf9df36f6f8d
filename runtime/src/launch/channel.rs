//! A message channel over a SOCK_SEQPACKET socketpair: one JSON message per packet, with
//! file descriptors attached as SCM_RIGHTS. Used shim <-> launcher and shim <-> init.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use nix::{
    cmsg_space,
    sys::socket::{
        recv, recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
        ControlMessageOwned, MsgFlags, SockFlag, SockType,
    },
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

const MAX_FDS: usize = 8;
/// Room for the largest plan we accept (a spec with a very large environment).
const BUFFER_BYTES: usize = 8 << 20;

#[derive(Debug)]
pub struct Channel(OwnedFd);

fn err(what: &str, e: nix::Error) -> Error {
    Error::sys(format!("launcher channel: {what}"), e)
}

impl Channel {
    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel(fd)
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// A connected pair; both ends are close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| err("socketpair", e))?;
        for fd in [&a, &b] {
            // Best effort: root may raise the buffers past the sysctl maximum.
            let _ = setsockopt(fd, sockopt::SndBufForce, &BUFFER_BYTES);
            let _ = setsockopt(fd, sockopt::RcvBufForce, &BUFFER_BYTES);
        }
        Ok((Channel(a), Channel(b)))
    }

    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(|e| Error::Other(e.to_string()))?;
        let iov = [IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| err("send", e))?;
        Ok(())
    }

    /// Receives one message; `None` when the peer has closed its end (or exec'd).
    pub fn recv<T: DeserializeOwned>(&self) -> Result<Option<(T, Vec<OwnedFd>)>> {
        match self.receive(MsgFlags::empty())? {
            Received::Message(m, fds) => Ok(Some((m, fds))),
            Received::Closed => Ok(None),
            Received::Empty => unreachable!("a blocking receive waits for a message"),
        }
    }

    /// Receives one message if one is there, without blocking.
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<Received<T>> {
        self.receive(MsgFlags::MSG_DONTWAIT)
    }

    fn receive<T: DeserializeOwned>(&self, flags: MsgFlags) -> Result<Received<T>> {
        let fd = self.0.as_raw_fd();
        // Peek the packet's real length so the buffer fits it exactly.
        let len = loop {
            match recv(
                fd,
                &mut [],
                flags | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return Ok(Received::Empty),
                Err(e) => return Err(err("recv", e)),
                Ok(n) => break n,
            }
        };
        let mut buf = vec![0u8; len.max(1)];
        let mut cmsg_buf = cmsg_space!([RawFd; MAX_FDS]);
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut cmsg_buf),
                flags | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(err("recvmsg", e)),
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(|e| err("cmsgs", e))? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: SCM_RIGHTS hands us new descriptors that nothing else owns.
                            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                        }
                    }
                    break (msg.bytes, fds);
                }
            }
        };
        if n == 0 {
            return Ok(Received::Closed);
        }
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::Other(format!("launcher channel: bad message: {e}")))?;
        Ok(Received::Message(msg, fds))
    }
}

/// What a non-blocking receive found.
#[derive(Debug)]
pub enum Received<T> {
    Message(T, Vec<OwnedFd>),
    /// Nothing there yet.
    Empty,
    /// The peer closed its end (or exec'd).
    Closed,
}
