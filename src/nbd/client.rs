//! A small blocking NBD client: fixed newstyle with NBD_OPT_GO, optional structured
//! replies, read/write/flush/trim/write-zeroes, and raw pipelined requests for tests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use super::proto::{
    ChunkType, Command, ErrorCode, IHAVEOPT, InfoType, NBDMAGIC, OPT_REPLY_MAGIC, OptionType,
    ReplyType, client_flags, cmd_flags, handshake_flags, reply_flags,
};
use super::reply::{ReplyHeader, decode_header, header_len};
use super::request::{FramingError, MAX_PAYLOAD, Request};

/// Longest option reply accepted.
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What the server said about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Minimum block size (1 when not advertised).
    pub min_block: u32,
    /// Preferred block size.
    pub preferred_block: u32,
    /// Maximum payload.
    pub max_payload: u32,
    /// Structured replies are in use.
    pub structured: bool,
}

/// Client failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The server answered an option with an error reply.
    #[error("server refused {opt}: {ty}: {msg}")]
    OptionRefused {
        /// The option.
        opt: OptionType,
        /// The error reply type.
        ty: ReplyType,
        /// The server's message.
        msg: String,
    },
    /// The server broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A reply with an unknown magic.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The request failed on the server.
    #[error("request failed with {code}{}", if msg.is_empty() { String::new() } else { format!(": {msg}") })]
    Request {
        /// NBD error value.
        code: ErrorCode,
        /// Message from a structured error chunk.
        msg: String,
    },
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One reply: the cookie and either the read data (empty for other commands) or the error.
pub type Reply = (u64, Result<Vec<u8>, ClientError>);

/// A connected client in transmission.
pub struct Client {
    stream: Stream,
    info: ExportInfo,
    next_cookie: u64,
    /// Cookie -> (offset, length) of reads in flight.
    reads: HashMap<u64, (u64, u32)>,
}

impl Client {
    /// Connects over a unix socket and negotiates `export` with NBD_OPT_GO.
    pub fn connect_unix(
        path: impl AsRef<Path>,
        export: &str,
        structured: bool,
    ) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Self::handshake(Stream::Unix(s), export, structured)
    }

    /// Connects over TCP and negotiates `export` with NBD_OPT_GO.
    pub fn connect_tcp(
        addr: SocketAddr,
        export: &str,
        structured: bool,
    ) -> Result<Client, ClientError> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Self::handshake(Stream::Tcp(s), export, structured)
    }

    fn handshake(mut s: Stream, export: &str, structured: bool) -> Result<Client, ClientError> {
        let mut g = [0u8; 18];
        s.read_exact(&mut g)?;
        if g[..8] != NBDMAGIC.to_be_bytes() || g[8..16] != IHAVEOPT.to_be_bytes() {
            return Err(ClientError::Protocol("not a newstyle NBD server"));
        }
        let hflags = u16::from_be_bytes([g[16], g[17]]);
        if hflags & handshake_flags::FIXED_NEWSTYLE == 0 {
            return Err(ClientError::Protocol("server lacks fixed newstyle"));
        }
        let mut cflags = client_flags::FIXED_NEWSTYLE;
        if hflags & handshake_flags::NO_ZEROES != 0 {
            cflags |= client_flags::NO_ZEROES;
        }
        s.write_all(&cflags.to_be_bytes())?;
        let mut info = ExportInfo {
            min_block: 1,
            preferred_block: 4096,
            max_payload: MAX_PAYLOAD,
            ..ExportInfo::default()
        };
        if structured {
            send_option(&mut s, OptionType::STRUCTURED_REPLY, &[])?;
            let (ty, msg) = read_option_reply(&mut s, OptionType::STRUCTURED_REPLY)?;
            info.structured = ty == ReplyType::ACK;
            if ty != ReplyType::ACK && !ty.is_error() {
                return Err(ClientError::Protocol(
                    "unexpected reply to STRUCTURED_REPLY",
                ));
            }
            let _ = msg;
        }
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&InfoType::BLOCK_SIZE.0.to_be_bytes());
        send_option(&mut s, OptionType::GO, &data)?;
        let mut got_export = false;
        loop {
            let (ty, d) = read_option_reply(&mut s, OptionType::GO)?;
            match ty {
                ReplyType::ACK => break,
                ReplyType::INFO => {
                    let kind = d
                        .get(..2)
                        .map(|b| InfoType(u16::from_be_bytes([b[0], b[1]])));
                    match kind {
                        Some(InfoType::EXPORT) if d.len() == 12 => {
                            info.size = u64::from_be_bytes(d[2..10].try_into().unwrap_or_default());
                            info.flags = u16::from_be_bytes([d[10], d[11]]);
                            got_export = true;
                        }
                        Some(InfoType::BLOCK_SIZE) if d.len() == 14 => {
                            let u = |i: usize| {
                                u32::from_be_bytes(d[i..i + 4].try_into().unwrap_or_default())
                            };
                            info.min_block = u(2);
                            info.preferred_block = u(6);
                            info.max_payload = u(10);
                        }
                        _ => {}
                    }
                }
                t if t.is_error() => {
                    return Err(ClientError::OptionRefused {
                        opt: OptionType::GO,
                        ty: t,
                        msg: String::from_utf8_lossy(&d).into_owned(),
                    });
                }
                _ => return Err(ClientError::Protocol("unexpected reply to GO")),
            }
        }
        if !got_export {
            return Err(ClientError::Protocol(
                "GO succeeded without NBD_INFO_EXPORT",
            ));
        }
        Ok(Client {
            stream: s,
            info,
            next_cookie: 1,
            reads: HashMap::new(),
        })
    }

    /// The connected unix socket, in transmission, for whoever takes the connection over
    /// (the kernel's NBD client, see `kernel::attach`). `None` on a TCP connection.
    pub fn into_unix_stream(self) -> Option<UnixStream> {
        match self.stream {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }

    /// What the server advertised.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Sends a request without waiting; returns its cookie.
    pub fn send_request(
        &mut self,
        cmd: Command,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let h = Request {
            flags,
            cmd,
            cookie,
            offset,
            len,
        }
        .encode();
        if cmd == Command::READ {
            self.reads.insert(cookie, (offset, len));
        }
        if payload.is_empty() {
            self.stream.write_all(&h)?;
        } else {
            let mut v = Vec::with_capacity(h.len() + payload.len());
            v.extend_from_slice(&h);
            v.extend_from_slice(payload);
            self.stream.write_all(&v)?;
        }
        Ok(cookie)
    }

    /// Receives the next complete reply (replies may come in any order).
    pub fn recv_reply(&mut self) -> Result<Reply, ClientError> {
        let mut magic = [0u8; 4];
        self.stream.read_exact(&mut magic)?;
        let hl = header_len(u32::from_be_bytes(magic))?;
        let mut h = vec![0u8; hl];
        h[..4].copy_from_slice(&magic);
        self.stream.read_exact(&mut h[4..])?;
        match decode_header(&h)? {
            ReplyHeader::Simple { cookie, error } => {
                let read = self.reads.remove(&cookie);
                if error != 0 {
                    return Ok((
                        cookie,
                        Err(ClientError::Request {
                            code: ErrorCode(error),
                            msg: String::new(),
                        }),
                    ));
                }
                let mut data = vec![0u8; read.map_or(0, |(_, l)| l as usize)];
                self.stream.read_exact(&mut data)?;
                Ok((cookie, Ok(data)))
            }
            ReplyHeader::Chunk { .. } => self.recv_structured(h),
        }
    }

    fn recv_structured(&mut self, mut h: Vec<u8>) -> Result<Reply, ClientError> {
        let mut data: Option<Vec<u8>> = None;
        let mut error: Option<ClientError> = None;
        loop {
            let ReplyHeader::Chunk {
                flags,
                ty,
                cookie,
                len,
            } = decode_header(&h)?
            else {
                return Err(ClientError::Protocol(
                    "simple reply inside a structured reply",
                ));
            };
            if len > MAX_PAYLOAD + 64 {
                return Err(ClientError::Protocol("chunk too long"));
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload)?;
            let read = self.reads.get(&cookie).copied();
            match ty {
                ChunkType::NONE => {}
                ChunkType::OFFSET_DATA | ChunkType::OFFSET_HOLE => {
                    let (roff, rlen) = read.ok_or(ClientError::Protocol("data for a non-read"))?;
                    let buf = data.get_or_insert_with(|| vec![0u8; rlen as usize]);
                    let off = payload
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .ok_or(ClientError::Protocol("short data chunk"))?;
                    let at = off
                        .checked_sub(roff)
                        .ok_or(ClientError::Protocol("chunk before the read"))?
                        as usize;
                    if ty == ChunkType::OFFSET_DATA {
                        let d = &payload[8..];
                        let dst = buf
                            .get_mut(at..at + d.len())
                            .ok_or(ClientError::Protocol("chunk beyond the read"))?;
                        dst.copy_from_slice(d);
                    }
                }
                t if t.0 & (1 << 15) != 0 => {
                    let code = payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_be_bytes)
                        .unwrap_or(ErrorCode::EIO.0);
                    let mlen = payload
                        .get(4..6)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                        .unwrap_or(0);
                    let msg = payload
                        .get(6..6 + mlen)
                        .map(|m| String::from_utf8_lossy(m).into_owned())
                        .unwrap_or_default();
                    error = Some(ClientError::Request {
                        code: ErrorCode(code),
                        msg,
                    });
                }
                _ => return Err(ClientError::Protocol("unknown chunk type")),
            }
            if flags & reply_flags::DONE != 0 {
                let read = self.reads.remove(&cookie);
                return Ok(match error {
                    Some(e) => (cookie, Err(e)),
                    None => (
                        cookie,
                        Ok(data.unwrap_or_else(|| vec![0; read.map_or(0, |(_, l)| l as usize)])),
                    ),
                });
            }
            let mut magic = [0u8; 4];
            self.stream.read_exact(&mut magic)?;
            let hl = header_len(u32::from_be_bytes(magic))?;
            h = vec![0u8; hl];
            h[..4].copy_from_slice(&magic);
            self.stream.read_exact(&mut h[4..])?;
        }
    }

    fn call(
        &mut self,
        cmd: Command,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let cookie = self.send_request(cmd, flags, offset, len, payload)?;
        let (got, res) = self.recv_reply()?;
        if got != cookie {
            return Err(ClientError::Protocol("reply for another request"));
        }
        res
    }

    /// Reads `len` bytes.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, ClientError> {
        self.call(Command::READ, 0, offset, len, &[])
    }

    /// Writes `data`, optionally with FUA.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), ClientError> {
        let len = u32::try_from(data.len()).map_err(|_| ClientError::Protocol("write too long"))?;
        let flags = if fua { cmd_flags::FUA } else { 0 };
        self.call(Command::WRITE, flags, offset, len, data)
            .map(drop)
    }

    /// Flushes.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.call(Command::FLUSH, 0, 0, 0, &[]).map(drop)
    }

    /// Trims.
    pub fn trim(&mut self, offset: u64, len: u32) -> Result<(), ClientError> {
        self.call(Command::TRIM, 0, offset, len, &[]).map(drop)
    }

    /// Writes zeroes; `no_hole` forbids deallocation.
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u32,
        no_hole: bool,
    ) -> Result<(), ClientError> {
        let flags = if no_hole { cmd_flags::NO_HOLE } else { 0 };
        self.call(Command::WRITE_ZEROES, flags, offset, len, &[])
            .map(drop)
    }

    /// Sends NBD_CMD_DISC and closes.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        self.send_request(Command::DISC, 0, 0, 0, &[])?;
        Ok(())
    }
}

fn send_option(s: &mut Stream, opt: OptionType, data: &[u8]) -> Result<(), ClientError> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.0.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v)?;
    Ok(())
}

fn read_option_reply(s: &mut Stream, opt: OptionType) -> Result<(ReplyType, Vec<u8>), ClientError> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h)?;
    if h[..8] != OPT_REPLY_MAGIC.to_be_bytes() {
        return Err(ClientError::Protocol("bad option reply magic"));
    }
    let got = OptionType(u32::from_be_bytes([h[8], h[9], h[10], h[11]]));
    if got != opt {
        return Err(ClientError::Protocol("reply to another option"));
    }
    let ty = ReplyType(u32::from_be_bytes([h[12], h[13], h[14], h[15]]));
    let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    if len > MAX_OPTION_REPLY {
        return Err(ClientError::Protocol("option reply too long"));
    }
    let mut d = vec![0u8; len as usize];
    s.read_exact(&mut d)?;
    Ok((ty, d))
}
