//! Just enough generic netlink to talk to the kernel's `nbd` family: a request is one
//! message (`nlmsghdr` + `genlmsghdr` + attributes, built with [`Message`]), the kernel
//! answers with zero or more messages and an `NLMSG_ERROR` acknowledgement (we always ask
//! for one with `NLM_F_ACK`). Replies are parsed with every length checked against what
//! was received, and received into a buffer of fixed size ([`MAX_REPLY`]).
//!
//! Layouts (include/uapi/linux/netlink.h, genetlink.h): `nlmsghdr` is len u32, type u16,
//! flags u16, seq u32, pid u32 (16 bytes, host order); `genlmsghdr` is cmd u8, version u8,
//! reserved u16; an attribute is len u16 (header included, padding excluded), type u16,
//! then the payload padded to 4 bytes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Largest reply datagram we accept. The biggest answer we ask for is the `nbd` family's
/// description (`CTRL_CMD_GETFAMILY`: name, id, a handful of ops, one multicast group),
/// well under 2 KiB; a longer one is refused rather than allocated.
pub const MAX_REPLY: usize = 16 * 1024;
/// Most messages one request may answer with before its acknowledgement.
const MAX_REPLY_MESSAGES: usize = 16;

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// `NLA_F_NESTED`: the attribute holds attributes.
const NLA_F_NESTED: u16 = 1 << 15;
/// Flag bits of an attribute's type (`NLA_F_NESTED | NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

/// `GENL_ID_CTRL`: the controller family, which resolves family names to ids.
pub const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// What can go wrong talking netlink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A socket call failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the request (`NLMSG_ERROR` with a negative errno).
    #[error("the kernel answered {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// The reply does not parse.
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => Some(*e),
            _ => None,
        }
    }
}

/// A generic netlink request under construction.
#[derive(Debug)]
pub struct Message {
    buf: Vec<u8>,
    /// Start offsets of the nests not yet closed.
    open: Vec<usize>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Message {
    /// A request of `family` with command `cmd` (the sequence number is set when sent).
    pub fn new(family: u16, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        buf.extend_from_slice(&family.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Self {
            buf,
            open: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + payload.len();
        // Attribute lengths are u16; ours are a few bytes. A longer one is a caller bug.
        let len16 = u16::try_from(len).expect("netlink attribute longer than 64 KiB");
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A u32 attribute.
    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A u64 attribute.
    pub fn u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn string(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    /// Opens a nested attribute; close it with [`Message::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost open nest.
    ///
    /// # Panics
    /// Without an open nest (a caller bug).
    pub fn end_nest(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end_nest without begin_nest");
        let len = u16::try_from(self.buf.len() - start).expect("nest longer than 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The bytes to send, with the length and sequence number filled in.
    ///
    /// # Panics
    /// With a nest still open (a caller bug).
    fn finish(&mut self, seq: u32) -> &[u8] {
        assert!(self.open.is_empty(), "netlink message with an open nest");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// One attribute of a reply: its type (flags masked off) and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The attribute type.
    pub ty: u16,
    /// The payload, padding excluded.
    pub payload: &'a [u8],
}

impl Attr<'_> {
    /// The payload as a u16.
    pub fn as_u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.payload.get(..2)?.try_into().ok()?))
    }

    /// The payload as a u32.
    pub fn as_u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
}

/// Splits `data` into attributes; every declared length is checked against what is left.
pub fn parse_attrs(mut data: &[u8]) -> Result<Vec<Attr<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while data.len() >= NLA_HDRLEN {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > data.len() {
            return Err(NetlinkError::Malformed("attribute length"));
        }
        out.push(Attr {
            ty,
            payload: &data[NLA_HDRLEN..len],
        });
        data = data.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// One reply message: its netlink type, generic netlink command and attributes' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `nlmsg_type` (the family id).
    pub family: u16,
    /// `genlmsghdr.cmd`.
    pub cmd: u8,
    /// The attributes, unparsed (see [`parse_attrs`]).
    pub attrs: Vec<u8>,
}

/// What one received datagram held for our request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Data messages.
    pub replies: Vec<Reply>,
    /// The acknowledgement's errno (0: success), once it arrived.
    pub ack: Option<i32>,
}

/// Parses one datagram of replies to request `seq`; messages for another sequence number
/// are skipped (stale answers to an earlier request that timed out).
pub fn parse_datagram(mut data: &[u8], seq: u32) -> Result<Received, NetlinkError> {
    let mut got = Received::default();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        let mseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(NetlinkError::Malformed("message length"));
        }
        let body = &data[NLMSG_HDRLEN..len];
        data = data.get(align4(len)..).unwrap_or(&[]);
        if mseq != seq {
            continue;
        }
        match i32::from(ty) {
            libc::NLMSG_NOOP => {}
            libc::NLMSG_DONE => got.ack = Some(0),
            libc::NLMSG_ERROR => {
                let e = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(NetlinkError::Malformed("short NLMSG_ERROR"))?;
                // 0 is the acknowledgement; errors are negative errnos.
                got.ack = Some(e.checked_neg().unwrap_or(libc::EINVAL));
            }
            _ => {
                if body.len() < GENL_HDRLEN {
                    return Err(NetlinkError::Malformed("short generic netlink header"));
                }
                got.replies.push(Reply {
                    family: ty,
                    cmd: body[0],
                    attrs: body[GENL_HDRLEN..].to_vec(),
                });
            }
        }
    }
    Ok(got)
}

/// A bound `NETLINK_GENERIC` socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens and binds a generic netlink socket. Receives time out after `timeout`, so
    /// that a kernel that never answers cannot hang the daemon.
    pub fn open(timeout: std::time::Duration) -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all zero means "kernel picks our port id".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_usec: timeout.subsec_micros().into(),
        };
        // SAFETY: tv is a valid timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Self { fd, seq: 1 })
    }

    /// Sends `msg` and collects its replies until the acknowledgement. A negative
    /// acknowledgement is [`NetlinkError::Kernel`].
    pub fn request(&mut self, msg: &mut Message) -> Result<Vec<Reply>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sockaddr_nl is plain data; zero pid and groups address the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bytes and to are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &to as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if sent as usize != bytes.len() {
            return Err(NetlinkError::Malformed("short send"));
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; MAX_REPLY];
        for _ in 0..MAX_REPLY_MESSAGES {
            // MSG_TRUNC makes recv return the datagram's real length, so an oversized
            // one is detected instead of parsed half.
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(NetlinkError::Malformed("reply longer than MAX_REPLY"));
            }
            let got = parse_datagram(&buf[..n], seq)?;
            replies.extend(got.replies);
            match got.ack {
                None => {}
                Some(0) => return Ok(replies),
                Some(e) => return Err(NetlinkError::Kernel(e)),
            }
        }
        Err(NetlinkError::Malformed("no acknowledgement"))
    }

    /// Resolves a generic netlink family name to its id. `Ok(None)`: no such family
    /// (the kernel answers ENOENT: for `nbd`, the module is not loaded).
    pub fn family_id(&mut self, name: &str) -> Result<Option<u16>, NetlinkError> {
        let mut msg = Message::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
        msg.string(CTRL_ATTR_FAMILY_NAME, name);
        let replies = match self.request(&mut msg) {
            Ok(r) => r,
            Err(NetlinkError::Kernel(e)) if e == libc::ENOENT => return Ok(None),
            Err(e) => return Err(e),
        };
        for r in &replies {
            for a in parse_attrs(&r.attrs)? {
                if a.ty == CTRL_ATTR_FAMILY_ID {
                    return a
                        .as_u16()
                        .map(Some)
                        .ok_or(NetlinkError::Malformed("short CTRL_ATTR_FAMILY_ID"));
                }
            }
        }
        Err(NetlinkError::Malformed("family reply without an id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_with_nests() {
        let mut m = Message::new(0x20, 1, 1);
        m.u32(1, 7)
            .begin_nest(7)
            .begin_nest(1)
            .u32(1, 5)
            .end_nest()
            .end_nest();
        let b = m.finish(9).to_vec();
        assert_eq!(b.len(), 16 + 4 + 8 + 4 + 4 + 8);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()),
            b.len() as u32
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        let attrs = parse_attrs(&b[20..]).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].as_u32(), Some(7));
        assert_eq!(attrs[1].ty, 7, "NLA_F_NESTED masked off");
        let inner = parse_attrs(attrs[1].payload).unwrap();
        assert_eq!(inner[0].ty, 1);
        let sock = parse_attrs(inner[0].payload).unwrap();
        assert_eq!(sock[0].as_u32(), Some(5));
    }

    #[test]
    fn string_attributes_are_padded() {
        let mut m = Message::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
        m.string(CTRL_ATTR_FAMILY_NAME, "nbd");
        let b = m.finish(1).to_vec();
        assert_eq!(b.len(), 16 + 4 + 8);
        let a = parse_attrs(&b[20..]).unwrap();
        assert_eq!(a[0].payload, b"nbd\0");
    }

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn datagram_with_reply_and_ack() {
        let mut body = vec![1, 1, 0, 0];
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(&3u32.to_ne_bytes());
        let mut d = nlmsg(0x21, 5, &body);
        d.extend(nlmsg(0x21, 4, &body)); // stale: skipped
        d.extend(nlmsg(libc::NLMSG_ERROR as u16, 5, &[0; 20]));
        let got = parse_datagram(&d, 5).unwrap();
        assert_eq!(got.ack, Some(0));
        assert_eq!(got.replies.len(), 1);
        assert_eq!(
            parse_attrs(&got.replies[0].attrs).unwrap()[0].as_u32(),
            Some(3)
        );
    }

    #[test]
    fn kernel_error_is_a_positive_errno() {
        let mut e = (-libc::EBUSY).to_ne_bytes().to_vec();
        e.extend_from_slice(&[0; 16]);
        let d = nlmsg(libc::NLMSG_ERROR as u16, 2, &e);
        assert_eq!(parse_datagram(&d, 2).unwrap().ack, Some(libc::EBUSY));
    }

    #[test]
    fn lying_lengths_are_rejected_not_sliced() {
        let mut d = nlmsg(0x21, 1, &[1, 1, 0, 0]);
        d[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(matches!(
            parse_datagram(&d, 1),
            Err(NetlinkError::Malformed("message length"))
        ));
        let mut body = vec![1, 1, 0, 0];
        body.extend_from_slice(&200u16.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        let d = nlmsg(0x21, 1, &body);
        let got = parse_datagram(&d, 1).unwrap();
        assert!(matches!(
            parse_attrs(&got.replies[0].attrs),
            Err(NetlinkError::Malformed("attribute length"))
        ));
        let mut short = 3u16.to_ne_bytes().to_vec();
        short.extend_from_slice(&1u16.to_ne_bytes());
        assert!(parse_attrs(&short).is_err(), "length below the header");
        assert!(
            parse_datagram(&nlmsg(0x21, 1, &[1]), 1).is_err(),
            "short genl header"
        );
    }
}
