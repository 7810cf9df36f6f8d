//! A message channel over a SOCK_SEQPACKET socketpair: one JSON message per packet, with
//! file descriptors attached as SCM_RIGHTS. Used shim <-> launcher and shim <-> init.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
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

/// Descriptors one message carries at most: a launch carries 3 for stdio, one per v1
/// cgroup hierarchy (up to about 16, see `cgroups::open_entry`), and a few more.
const MAX_FDS: usize = 64;
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
        self.send_bytes(&bytes, fds)
    }

    /// One packet of `bytes` (with `fds`), as [`Channel::send`] sends an encoded message.
    pub(crate) fn send_bytes(&self, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::Other(format!(
                "launcher channel: {} descriptors in one message, at most {MAX_FDS}",
                fds.len()
            )));
        }
        let iov = [IoSlice::new(bytes)];
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

    /// A message as [`Channel::send`] puts it on the wire, for [`Channel::send_raw_with_fd`].
    pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
        serde_json::to_vec(msg).expect("protocol messages serialise")
    }

    /// Sends the pre-encoded message `notice` with `fd` and waits for the pre-encoded reply
    /// `ack`, with plain syscalls on stack buffers: usable where allocating is not (under a
    /// freshly loaded seccomp filter). Returns false when the peer closed or answered
    /// something else.
    pub fn send_raw_with_fd(
        &self,
        notice: &[u8],
        fd: BorrowedFd<'_>,
        ack: &[u8],
    ) -> std::io::Result<bool> {
        const SPACE: usize =
            // SAFETY: CMSG_SPACE is arithmetic on its argument.
            unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
        let mut cmsg_buf = [0u64; SPACE.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: notice.as_ptr() as *mut libc::c_void,
            iov_len: notice.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = SPACE as _;
        // SAFETY: the control buffer has room for one header with one descriptor.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd.as_raw_fd());
        }
        // SAFETY: msg points at live buffers.
        if unsafe { libc::sendmsg(self.0.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a local buffer of the given length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            return Ok(&buf[..n as usize] == ack);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn raw_hand_off_carries_the_fd_and_reads_the_ack() {
        let (a, b) = Channel::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let peer = std::thread::spawn(move || {
            let (msg, fds) = b.recv::<String>().unwrap().unwrap();
            assert_eq!(msg, "notice");
            assert_eq!(fds.len(), 1);
            b.send(&"ack", &[]).unwrap();
        });
        let ok = a
            .send_raw_with_fd(
                &Channel::encode(&"notice"),
                r.as_fd(),
                &Channel::encode(&"ack"),
            )
            .unwrap();
        peer.join().unwrap();
        assert!(ok);
    }
}
