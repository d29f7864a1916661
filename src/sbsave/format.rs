//! The split-brain save file format (version 1), specified in `docs/SPLIT_BRAIN_SAVES.md`:
//! a header, records of (device offset, length, data), and a trailer with a CRC32C of
//! everything before it. All integers are big-endian, as in DRBD's metadata.
//!
//! Both directions stream: [`SaveWriter`] writes records as they are read from the disk,
//! [`SaveReader`] hands records out one at a time into a caller's buffer. No length read
//! from a file is used before it is checked against a named cap, so a damaged or hostile
//! file cannot make the reader allocate more than [`MAX_RECORD_BYTES`] for data.

use std::io::{self, Read, Write};

/// First 8 bytes of a save file.
pub const MAGIC: [u8; 8] = *b"URBD-SBS";
/// The 8 bytes that open the trailer.
pub const END_MAGIC: [u8; 8] = *b"URBD-END";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The unit of a saved block (the bitmap's granularity).
pub const BLOCK_SIZE: u32 = 4096;
/// Largest header accepted (fixed fields plus four short strings).
pub const MAX_HEADER_BYTES: u32 = 4096;
/// Longest string field (resource, node names, reason).
pub const MAX_STRING_BYTES: usize = 255;
/// Largest record: runs of adjacent blocks are cut into records of at most this size, and
/// a reader allocates at most this much for one record's data.
pub const MAX_RECORD_BYTES: u32 = 1 << 20;
/// Bytes of the fixed part of the header (magic to the peer's UUIDs).
pub const FIXED_HEADER_BYTES: u32 = 8 + 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 32 + 32;
/// Bytes of a record's head (offset and length).
pub const RECORD_HEAD_BYTES: u64 = 12;
/// Bytes of the trailer (end magic and CRC32C).
pub const TRAILER_BYTES: u64 = 12;

/// What a save file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The resource.
    pub resource: String,
    /// The volume number.
    pub volume: u32,
    /// This node (the split-brain victim whose blocks are saved).
    pub node: String,
    /// The peer whose data replaced them.
    pub peer: String,
    /// Why the blocks were discarded (`--discard-my-data`, `after-sb-0pri ...`).
    pub reason: String,
    /// When the save was made, seconds since the Unix epoch (UTC).
    pub created_unix: u64,
    /// The device size, bytes (no record reaches past it).
    pub device_bytes: u64,
    /// Number of records.
    pub records: u64,
    /// Bytes of data in all records together.
    pub data_bytes: u64,
    /// This node's generation UUIDs at the handshake (current, bitmap, history 1, 2).
    pub local_uuids: [u64; 4],
    /// The peer's.
    pub peer_uuids: [u64; 4],
}

impl Header {
    /// The header's length as [`Header::encode`] writes it.
    pub fn encoded_len(&self) -> u32 {
        let strings: usize = [&self.resource, &self.node, &self.peer, &self.reason]
            .iter()
            .map(|s| 2 + cut(s).len())
            .sum();
        FIXED_HEADER_BYTES + strings as u32
    }

    /// The length of the whole file this header announces.
    pub fn file_len(&self) -> u64 {
        u64::from(self.encoded_len())
            + self.records.saturating_mul(RECORD_HEAD_BYTES)
            + self.data_bytes
            + TRAILER_BYTES
    }

    /// 4 KiB blocks saved (a last partial block at the device's end counts as one).
    pub fn blocks(&self) -> u64 {
        self.data_bytes.div_ceil(u64::from(BLOCK_SIZE))
    }

    /// Appends the header to `out`. Strings longer than [`MAX_STRING_BYTES`] are cut (at a
    /// character boundary).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.encoded_len().to_be_bytes());
        out.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
        out.extend_from_slice(&self.volume.to_be_bytes());
        out.extend_from_slice(&self.created_unix.to_be_bytes());
        out.extend_from_slice(&self.device_bytes.to_be_bytes());
        out.extend_from_slice(&self.records.to_be_bytes());
        out.extend_from_slice(&self.data_bytes.to_be_bytes());
        for u in self.local_uuids.iter().chain(&self.peer_uuids) {
            out.extend_from_slice(&u.to_be_bytes());
        }
        for s in [&self.resource, &self.node, &self.peer, &self.reason] {
            let s = cut(s);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_STRING_BYTES {
        return s;
    }
    let mut end = MAX_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What is wrong with a save file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The first 8 bytes are not [`MAGIC`].
    #[error("not a urbd split-brain save (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("format version {0} is not supported (this urbd reads version {VERSION})")]
    Version(u32),
    /// The file ends inside a field.
    #[error("the file is truncated: it ends inside {0}")]
    Truncated(&'static str),
    /// A length or count over its cap.
    #[error("{what} {value} exceeds the limit {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The cap.
        max: u64,
    },
    /// A field with a value that cannot be.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A record that does not fit the header's device or the records before it.
    #[error("record at device offset {offset} (length {len}): {why}")]
    BadRecord {
        /// The record's device offset.
        offset: u64,
        /// Its length.
        len: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// The trailer does not open with [`END_MAGIC`] (wrong record count, damaged file).
    #[error("no trailer where the header's record count puts it")]
    BadTrailer,
    /// The CRC32C in the trailer does not match the contents.
    #[error("checksum mismatch: the trailer says {stored:08x}, the contents give {computed:08x}")]
    Checksum {
        /// What the trailer says.
        stored: u32,
        /// What the contents give.
        computed: u32,
    },
    /// The data records do not add up to the header's totals.
    #[error("the records hold {got} bytes, the header says {want}")]
    DataBytes {
        /// Sum of the records.
        got: u64,
        /// The header's `data_bytes`.
        want: u64,
    },
    /// Bytes after the trailer.
    #[error("unexpected data after the trailer")]
    TrailingData,
}

/// A reading failure: bad contents at a byte offset of the file, or I/O.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The contents are wrong at byte `at` of the file.
    #[error("at byte offset {at}: {kind}")]
    Format {
        /// Byte offset in the file where the faulty field starts.
        at: u64,
        /// What is wrong.
        kind: FormatError,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The format error, if it is one.
    pub fn format(&self) -> Option<(u64, FormatError)> {
        match self {
            ReadError::Format { at, kind } => Some((*at, *kind)),
            ReadError::Io(_) => None,
        }
    }
}

/// One record's place on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Byte offset on the device.
    pub offset: u64,
    /// Bytes of data.
    pub len: u32,
}

/// Reads a save file front to back, checking each field as it comes.
pub struct SaveReader<R> {
    r: R,
    pos: u64,
    crc: u32,
    header: Header,
    left: u64,
    data_seen: u64,
    /// End of the previous record (records are ordered and do not overlap).
    next_min: u64,
    done: bool,
}

impl<R: Read> SaveReader<R> {
    /// Reads and checks the header.
    pub fn new(r: R) -> Result<SaveReader<R>, ReadError> {
        let mut s = SaveReader {
            r,
            pos: 0,
            crc: 0,
            header: Header {
                resource: String::new(),
                volume: 0,
                node: String::new(),
                peer: String::new(),
                reason: String::new(),
                created_unix: 0,
                device_bytes: 0,
                records: 0,
                data_bytes: 0,
                local_uuids: [0; 4],
                peer_uuids: [0; 4],
            },
            left: 0,
            data_seen: 0,
            next_min: 0,
            done: false,
        };
        s.read_header()?;
        Ok(s)
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn fail<T>(&self, at: u64, kind: FormatError) -> Result<T, ReadError> {
        Err(ReadError::Format { at, kind })
    }

    /// Fills `buf` from the file, counting it into the checksum; a short file is
    /// [`FormatError::Truncated`] naming `what`.
    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ReadError> {
        let at = self.pos;
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => return self.fail(at, FormatError::Truncated(what)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ReadError> {
        let mut b = [0; 2];
        self.fill(&mut b, what)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ReadError> {
        let mut b = [0; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ReadError> {
        let mut b = [0; 8];
        self.fill(&mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ReadError> {
        let at = self.pos;
        let len = usize::from(self.u16(what)?);
        if len > MAX_STRING_BYTES {
            return self.fail(
                at,
                FormatError::TooLarge {
                    what,
                    value: len as u64,
                    max: MAX_STRING_BYTES as u64,
                },
            );
        }
        let mut b = [0u8; MAX_STRING_BYTES];
        self.fill(&mut b[..len], what)?;
        match std::str::from_utf8(&b[..len]) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.fail(at, FormatError::Invalid(what)),
        }
    }

    fn read_header(&mut self) -> Result<(), ReadError> {
        let mut magic = [0u8; 8];
        self.fill(&mut magic, "the magic")?;
        if magic != MAGIC {
            return self.fail(0, FormatError::BadMagic);
        }
        let at = self.pos;
        let version = self.u32("the version")?;
        if version != VERSION {
            return self.fail(at, FormatError::Version(version));
        }
        let at = self.pos;
        let header_len = self.u32("the header length")?;
        if header_len > MAX_HEADER_BYTES {
            return self.fail(
                at,
                FormatError::TooLarge {
                    what: "header length",
                    value: u64::from(header_len),
                    max: u64::from(MAX_HEADER_BYTES),
                },
            );
        }
        if header_len < FIXED_HEADER_BYTES + 8 {
            return self.fail(at, FormatError::Invalid("header length"));
        }
        let at = self.pos;
        if self.u32("the block size")? != BLOCK_SIZE {
            return self.fail(at, FormatError::Invalid("block size"));
        }
        let mut h = self.header.clone();
        h.volume = self.u32("the volume")?;
        h.created_unix = self.u64("the time")?;
        h.device_bytes = self.u64("the device size")?;
        let at = self.pos;
        h.records = self.u64("the record count")?;
        let at_bytes = self.pos;
        h.data_bytes = self.u64("the data size")?;
        if h.data_bytes > h.device_bytes {
            return self.fail(
                at_bytes,
                FormatError::Invalid("data size (larger than the device)"),
            );
        }
        // Every record holds at least 512 bytes.
        if h.records > h.data_bytes / 512 {
            return self.fail(
                at,
                FormatError::Invalid("record count (more records than data)"),
            );
        }
        for i in 0..8 {
            let u = self.u64("the UUIDs")?;
            if i < 4 {
                h.local_uuids[i] = u;
            } else {
                h.peer_uuids[i - 4] = u;
            }
        }
        h.resource = self.string("the resource name")?;
        h.node = self.string("the node name")?;
        h.peer = self.string("the peer name")?;
        h.reason = self.string("the reason")?;
        if self.pos > u64::from(header_len) {
            return self.fail(
                8 + 4,
                FormatError::Invalid("header length (shorter than its fields)"),
            );
        }
        // Fields a later minor revision may add: skipped, but checksummed.
        let mut rest = [0u8; MAX_HEADER_BYTES as usize];
        let extra = (u64::from(header_len) - self.pos) as usize;
        self.fill(&mut rest[..extra], "the header")?;
        self.left = h.records;
        self.header = h;
        Ok(())
    }

    /// The next record: its data replaces `buf`'s contents. `None` after the last one, once
    /// the trailer and checksum are verified and nothing follows.
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<Record>, ReadError> {
        if self.done {
            return Ok(None);
        }
        if self.left == 0 {
            self.finish()?;
            return Ok(None);
        }
        let at = self.pos;
        let offset = self.u64("a record's offset")?;
        let len = self.u32("a record's length")?;
        let bad = |why| FormatError::BadRecord { offset, len, why };
        if len > MAX_RECORD_BYTES {
            return self.fail(
                at,
                FormatError::TooLarge {
                    what: "record length",
                    value: u64::from(len),
                    max: u64::from(MAX_RECORD_BYTES),
                },
            );
        }
        if len == 0 || len % 512 != 0 || offset % u64::from(BLOCK_SIZE) != 0 {
            return self.fail(at, bad("not aligned to 4 KiB blocks"));
        }
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > self.header.device_bytes)
        {
            return self.fail(at, bad("reaches past the device"));
        }
        if offset < self.next_min {
            return self.fail(at, bad("out of order or overlapping the one before"));
        }
        if self.data_seen + u64::from(len) > self.header.data_bytes {
            return self.fail(
                at,
                FormatError::DataBytes {
                    got: self.data_seen + u64::from(len),
                    want: self.header.data_bytes,
                },
            );
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.fill(buf, "a record's data")?;
        self.left -= 1;
        self.data_seen += u64::from(len);
        self.next_min = offset + u64::from(len);
        Ok(Some(Record { offset, len }))
    }

    fn finish(&mut self) -> Result<(), ReadError> {
        let at = self.pos;
        if self.data_seen != self.header.data_bytes {
            return self.fail(
                at,
                FormatError::DataBytes {
                    got: self.data_seen,
                    want: self.header.data_bytes,
                },
            );
        }
        let mut end = [0u8; 8];
        self.fill(&mut end, "the trailer")?;
        if end != END_MAGIC {
            return self.fail(at, FormatError::BadTrailer);
        }
        let computed = self.crc;
        let at = self.pos;
        let mut b = [0u8; 4];
        self.fill(&mut b, "the checksum")?;
        let stored = u32::from_be_bytes(b);
        if stored != computed {
            return self.fail(at, FormatError::Checksum { stored, computed });
        }
        let mut one = [0u8; 1];
        loop {
            match self.r.read(&mut one) {
                Ok(0) => break,
                Ok(_) => return self.fail(self.pos, FormatError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.done = true;
        Ok(())
    }
}

/// Writes a save file: the header, then exactly the records it announces, then the
/// trailer ([`SaveWriter::finish`]).
pub struct SaveWriter<W> {
    w: W,
    crc: u32,
    header: Header,
    records: u64,
    data: u64,
    next_min: u64,
}

/// A writer used against the header it was given.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A record the header does not allow (a bug of the caller).
    #[error("record at device offset {0} does not match the header")]
    Mismatch(u64),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl<W: Write> SaveWriter<W> {
    /// Writes the header.
    pub fn new(mut w: W, header: Header) -> Result<SaveWriter<W>, WriteError> {
        let mut buf = Vec::with_capacity(header.encoded_len() as usize);
        header.encode(&mut buf);
        w.write_all(&buf)?;
        Ok(SaveWriter {
            w,
            crc: crc32c::crc32c(&buf),
            header,
            records: 0,
            data: 0,
            next_min: 0,
        })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.w.write_all(b)
    }

    /// Writes one record (`data` read from device offset `offset`).
    pub fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        let len = u32::try_from(data.len()).map_err(|_| WriteError::Mismatch(offset))?;
        let fits = len > 0
            && len <= MAX_RECORD_BYTES
            && len % 512 == 0
            && offset % u64::from(BLOCK_SIZE) == 0
            && offset >= self.next_min
            && offset + u64::from(len) <= self.header.device_bytes
            && self.records < self.header.records
            && self.data + u64::from(len) <= self.header.data_bytes;
        if !fits {
            return Err(WriteError::Mismatch(offset));
        }
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&offset.to_be_bytes());
        head[8..].copy_from_slice(&len.to_be_bytes());
        self.put(&head)?;
        self.put(data)?;
        self.records += 1;
        self.data += u64::from(len);
        self.next_min = offset + u64::from(len);
        Ok(())
    }

    /// Writes the trailer and hands back the writer (to flush and sync).
    pub fn finish(mut self) -> Result<W, WriteError> {
        if self.records != self.header.records || self.data != self.header.data_bytes {
            return Err(WriteError::Mismatch(self.next_min));
        }
        self.put(&END_MAGIC)?;
        let crc = self.crc;
        self.w.write_all(&crc.to_be_bytes())?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests;
