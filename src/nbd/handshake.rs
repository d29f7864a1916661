//! Option negotiation, sans-IO.
//!
//! [`Handshake`] never touches a socket: the caller feeds received bytes to
//! [`Handshake::handle_input`] (which consumes only whole units: the client flags, an option
//! header, an option's data), sends what [`Handshake::take_output`] returns, and reads
//! [`Handshake::outcome`] to learn whether to keep negotiating, start transmission, or
//! close.
//!
//! Fixed newstyle only. Recoverable problems get an error reply and negotiation goes on:
//! unknown options get `NBD_REP_ERR_UNSUP`, malformed ones `NBD_REP_ERR_INVALID`, options
//! longer than [`MAX_OPTION_LEN`] are skipped without being stored and get
//! `NBD_REP_ERR_TOO_BIG`. Framing errors close the connection: a wrong option magic, unknown
//! client flags, more than [`MAX_OPTIONS`] options.
//!
//! TLS ([`TlsMode`], the spec's "TLS support"): with `Off` (NOTLS) `NBD_OPT_STARTTLS` gets
//! `NBD_REP_ERR_UNSUP`. With `On` (SELECTIVETLS with no TLS-only export) and `Require`
//! (FORCEDTLS) it gets `NBD_REP_ACK` and the outcome becomes [`Outcome::StartTls`]: the
//! caller sends the ACK in clear, runs the TLS handshake, and calls
//! [`Handshake::tls_started`]; negotiation then goes on inside TLS from a clean state
//! (what was agreed in clear, such as structured replies, is forgotten: a man in the
//! middle could have chosen it). Under `Require`, before TLS, every option other than
//! STARTTLS and ABORT gets `NBD_REP_ERR_TLS_REQD`, and `NBD_OPT_EXPORT_NAME`, which has no
//! error reply, closes the connection. A second STARTTLS gets `NBD_REP_ERR_INVALID`.

use crate::meta::codec::Reader;

use super::proto::{
    IHAVEOPT, InfoType, NBDMAGIC, OPT_REPLY_MAGIC, OptionType, ReplyType, client_flags,
    handshake_flags, tx_flags,
};

/// Longest option payload stored (an export name is at most 4096 bytes, plus a little).
pub const MAX_OPTION_LEN: u32 = 8192;
/// Most options one connection may send before it is cut off (nbdkit's MAX_NR_OPTIONS).
pub const MAX_OPTIONS: u32 = 32;
/// Bytes of an option header: magic, option, length.
pub const OPTION_HEADER_LEN: usize = 16;

/// The export as negotiation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDesc {
    /// Export name; the empty name (the default export) also selects it.
    pub name: String,
    /// Optional text for NBD_INFO_DESCRIPTION and LIST.
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (without SEND_DF, which depends on structured replies).
    pub flags: u16,
    /// Minimum block size advertised.
    pub min_block: u32,
    /// Preferred block size advertised.
    pub preferred_block: u32,
    /// Maximum payload advertised.
    pub max_payload: u32,
}

/// Whether the listener offers TLS (nbdkit's `--tls=off|on|require`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS (NOTLS): STARTTLS is unsupported.
    #[default]
    Off,
    /// TLS on request (SELECTIVETLS): clients may stay in clear.
    On,
    /// TLS first (FORCEDTLS): nothing but STARTTLS and ABORT before it.
    Require,
}

/// What negotiation agreed on, for the transmission phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Replies to reads (and errors) use structured chunks.
    pub structured_replies: bool,
    /// Transmission flags sent to the client.
    pub flags: u16,
}

/// Why negotiation ended without transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent NBD_OPT_ABORT.
    Aborted,
    /// Client flags with unknown bits.
    BadClientFlags(u32),
    /// An option did not start with IHAVEOPT.
    BadOptionMagic(u64),
    /// Too many options.
    TooManyOptions,
    /// NBD_OPT_EXPORT_NAME for an export we cannot serve (no error path exists).
    ExportRefused(String),
    /// NBD_OPT_EXPORT_NAME before TLS when TLS is required.
    TlsRequired,
}

/// Where negotiation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep feeding input.
    Negotiating,
    /// Send the pending output, then switch to transmission.
    Transmission(Negotiated),
    /// Send the pending output (STARTTLS's ACK) in clear, then run the TLS handshake and
    /// call [`Handshake::tls_started`]; no input is consumed until then.
    StartTls,
    /// Send the pending output, then close.
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientFlags,
    OptionHeader,
    OptionData { opt: OptionType, len: u32 },
    Skip { opt: OptionType, left: u64 },
    AwaitTls,
    Finished,
}

/// One connection's negotiation; see the module doc.
#[derive(Debug)]
pub struct Handshake {
    export: ExportDesc,
    refusal: Option<String>,
    state: State,
    out: Vec<u8>,
    options_seen: u32,
    no_zeroes: bool,
    structured: bool,
    tls: TlsMode,
    tls_active: bool,
    outcome: Outcome,
}

impl Handshake {
    /// Starts negotiation; the greeting is queued as output.
    pub fn new(export: ExportDesc) -> Self {
        let mut out = Vec::with_capacity(18);
        out.extend_from_slice(&NBDMAGIC.to_be_bytes());
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(
            &(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES).to_be_bytes(),
        );
        Self {
            export,
            refusal: None,
            state: State::ClientFlags,
            out,
            options_seen: 0,
            no_zeroes: false,
            structured: false,
            tls: TlsMode::Off,
            tls_active: false,
            outcome: Outcome::Negotiating,
        }
    }

    /// Sets the listener's TLS mode (before any input).
    pub fn set_tls(&mut self, mode: TlsMode) {
        self.tls = mode;
    }

    /// Whether the connection is inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// The TLS handshake that [`Outcome::StartTls`] asked for is under way: negotiation
    /// resumes (inside TLS) from a clean state.
    ///
    /// # Panics
    /// When the outcome was not [`Outcome::StartTls`] (a caller bug).
    pub fn tls_started(&mut self) {
        assert_eq!(
            self.outcome,
            Outcome::StartTls,
            "tls_started without STARTTLS"
        );
        self.tls_active = true;
        self.structured = false;
        self.state = State::OptionHeader;
        self.outcome = Outcome::Negotiating;
    }

    /// Sets whether the export may be chosen now: `Some(reason)` makes GO, INFO and
    /// EXPORT_NAME fail with that text (the daemon's gate, e.g. "r0 is Secondary").
    pub fn set_refusal(&mut self, refusal: Option<String>) {
        self.refusal = refusal;
    }

    /// Bytes to send, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Current outcome.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Consumes as much of `input` as forms whole units and returns how many bytes were
    /// used; the caller keeps the rest and calls again when more has arrived. Consumes
    /// nothing once the outcome is no longer [`Outcome::Negotiating`].
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Finished | State::AwaitTls => return used,
                State::ClientFlags => {
                    let Some(b) = rest.first_chunk::<4>() else {
                        return used;
                    };
                    used += 4;
                    let flags = u32::from_be_bytes(*b);
                    if flags & !client_flags::KNOWN != 0 {
                        self.close(CloseReason::BadClientFlags(flags));
                    } else {
                        self.no_zeroes = flags & client_flags::NO_ZEROES != 0;
                        self.state = State::OptionHeader;
                    }
                }
                State::OptionHeader => {
                    let Some(h) = rest.first_chunk::<OPTION_HEADER_LEN>() else {
                        return used;
                    };
                    used += OPTION_HEADER_LEN;
                    let mut r = Reader::new(h);
                    let (Ok(magic), Ok(opt), Ok(len)) =
                        (r.u64("magic"), r.u32("option"), r.u32("length"))
                    else {
                        return used; // unreachable: the header has 16 bytes
                    };
                    let opt = OptionType(opt);
                    self.options_seen += 1;
                    if magic != IHAVEOPT {
                        self.close(CloseReason::BadOptionMagic(magic));
                    } else if self.options_seen > MAX_OPTIONS {
                        self.close(CloseReason::TooManyOptions);
                    } else if len > MAX_OPTION_LEN {
                        self.state = State::Skip {
                            opt,
                            left: u64::from(len),
                        };
                    } else {
                        self.state = State::OptionData { opt, len };
                    }
                }
                State::Skip { opt, left } => {
                    let n = (rest.len() as u64).min(left);
                    used += n as usize;
                    if n == left {
                        self.error(opt, ReplyType::ERR_TOO_BIG, "option too long");
                        self.state = State::OptionHeader;
                    } else {
                        self.state = State::Skip {
                            opt,
                            left: left - n,
                        };
                        return used;
                    }
                }
                State::OptionData { opt, len } => {
                    let Some(data) = rest.get(..len as usize) else {
                        return used;
                    };
                    used += len as usize;
                    self.state = State::OptionHeader;
                    self.handle_option(opt, data);
                }
            }
        }
    }

    fn close(&mut self, reason: CloseReason) {
        tracing::debug!(?reason, "negotiation ends without transmission");
        self.state = State::Finished;
        self.outcome = Outcome::Close(reason);
    }

    fn reply(&mut self, opt: OptionType, ty: ReplyType, data: &[u8]) {
        self.out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
        self.out.extend_from_slice(&opt.0.to_be_bytes());
        self.out.extend_from_slice(&ty.0.to_be_bytes());
        // Replies are built from bounded data (names and messages we produce).
        self.out
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.out.extend_from_slice(data);
    }

    fn error(&mut self, opt: OptionType, ty: ReplyType, msg: &str) {
        tracing::debug!(%opt, %ty, msg, "option refused");
        self.reply(opt, ty, msg.as_bytes());
    }

    fn flags(&self) -> u16 {
        let mut f = self.export.flags | tx_flags::HAS_FLAGS;
        if self.structured {
            f |= tx_flags::SEND_DF;
        }
        f
    }

    /// Why the named export cannot be chosen now, if it cannot.
    fn check_export(&self, name: &str) -> Result<(), (ReplyType, String)> {
        if !name.is_empty() && name != self.export.name {
            return Err((ReplyType::ERR_UNKNOWN, format!("no export named {name:?}")));
        }
        match &self.refusal {
            Some(reason) => Err((ReplyType::ERR_UNKNOWN, reason.clone())),
            None => Ok(()),
        }
    }

    fn handle_option(&mut self, opt: OptionType, data: &[u8]) {
        tracing::trace!(%opt, len = data.len(), "option");
        if opt == OptionType::STARTTLS {
            return self.handle_starttls(data);
        }
        if self.tls == TlsMode::Require && !self.tls_active {
            match opt {
                OptionType::ABORT => {}
                OptionType::EXPORT_NAME => return self.close(CloseReason::TlsRequired),
                _ => {
                    return self.error(
                        opt,
                        ReplyType::ERR_TLS_REQD,
                        "TLS is required: send NBD_OPT_STARTTLS first",
                    );
                }
            }
        }
        match opt {
            OptionType::EXPORT_NAME => {
                let name = String::from_utf8_lossy(data);
                if let Err((_, why)) = self.check_export(&name) {
                    self.close(CloseReason::ExportRefused(why));
                    return;
                }
                let flags = self.flags() & !tx_flags::SEND_DF;
                self.out.extend_from_slice(&self.export.size.to_be_bytes());
                self.out.extend_from_slice(&flags.to_be_bytes());
                if !self.no_zeroes {
                    self.out.extend_from_slice(&[0u8; 124]);
                }
                self.start_transmission(flags);
            }
            OptionType::ABORT => {
                self.reply(opt, ReplyType::ACK, &[]);
                self.close(CloseReason::Aborted);
            }
            OptionType::LIST => {
                if !data.is_empty() {
                    return self.error(opt, ReplyType::ERR_INVALID, "LIST takes no data");
                }
                let name = self.export.name.clone().into_bytes();
                let mut d = Vec::with_capacity(4 + name.len());
                d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                d.extend_from_slice(&name);
                d.extend_from_slice(self.export.description.as_bytes());
                self.reply(opt, ReplyType::SERVER, &d);
                self.reply(opt, ReplyType::ACK, &[]);
            }
            OptionType::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    return self.error(
                        opt,
                        ReplyType::ERR_INVALID,
                        "STRUCTURED_REPLY takes no data",
                    );
                }
                self.structured = true;
                self.reply(opt, ReplyType::ACK, &[]);
            }
            OptionType::INFO | OptionType::GO => self.handle_info(opt, data),
            OptionType::LIST_META_CONTEXT | OptionType::SET_META_CONTEXT => self.error(
                opt,
                ReplyType::ERR_UNSUP,
                "no metadata contexts (block status) are offered",
            ),
            _ => self.error(opt, ReplyType::ERR_UNSUP, "unknown option"),
        }
    }

    fn handle_starttls(&mut self, data: &[u8]) {
        let opt = OptionType::STARTTLS;
        if self.tls == TlsMode::Off {
            return self.error(opt, ReplyType::ERR_UNSUP, "TLS is not offered here");
        }
        if self.tls_active {
            return self.error(opt, ReplyType::ERR_INVALID, "TLS is already active");
        }
        if !data.is_empty() {
            return self.error(opt, ReplyType::ERR_INVALID, "STARTTLS takes no data");
        }
        self.reply(opt, ReplyType::ACK, &[]);
        self.state = State::AwaitTls;
        self.outcome = Outcome::StartTls;
    }

    fn handle_info(&mut self, opt: OptionType, data: &[u8]) {
        let parsed = parse_info_request(data);
        let Some((name, requests)) = parsed else {
            return self.error(opt, ReplyType::ERR_INVALID, "malformed INFO/GO request");
        };
        if let Err((ty, why)) = self.check_export(&name) {
            return self.error(opt, ty, &why);
        }
        let flags = self.flags();
        let mut export = Vec::with_capacity(12);
        export.extend_from_slice(&InfoType::EXPORT.0.to_be_bytes());
        export.extend_from_slice(&self.export.size.to_be_bytes());
        export.extend_from_slice(&flags.to_be_bytes());
        self.reply(opt, ReplyType::INFO, &export);
        if requests.contains(&InfoType::NAME) {
            let mut d = InfoType::NAME.0.to_be_bytes().to_vec();
            d.extend_from_slice(self.export.name.as_bytes());
            self.reply(opt, ReplyType::INFO, &d);
        }
        if requests.contains(&InfoType::DESCRIPTION) && !self.export.description.is_empty() {
            let mut d = InfoType::DESCRIPTION.0.to_be_bytes().to_vec();
            d.extend_from_slice(self.export.description.as_bytes());
            self.reply(opt, ReplyType::INFO, &d);
        }
        // Sent whether or not it was asked for: with a minimum of 1 no client is bound to
        // anything it did not agree to, and it tells every client the preferred size.
        let mut d = InfoType::BLOCK_SIZE.0.to_be_bytes().to_vec();
        d.extend_from_slice(&self.export.min_block.to_be_bytes());
        d.extend_from_slice(&self.export.preferred_block.to_be_bytes());
        d.extend_from_slice(&self.export.max_payload.to_be_bytes());
        self.reply(opt, ReplyType::INFO, &d);
        self.reply(opt, ReplyType::ACK, &[]);
        if opt == OptionType::GO {
            self.start_transmission(flags);
        }
    }

    fn start_transmission(&mut self, flags: u16) {
        self.state = State::Finished;
        self.outcome = Outcome::Transmission(Negotiated {
            structured_replies: self.structured,
            flags,
        });
    }
}

/// Decodes NBD_OPT_INFO/GO data: name length, name, request count, requests. `None` when
/// the inner lengths disagree with the option length.
fn parse_info_request(data: &[u8]) -> Option<(String, Vec<InfoType>)> {
    let mut r = Reader::new(data);
    let name_len = r.u32("name length").ok()?;
    let name = r.take(usize::try_from(name_len).ok()?, "name").ok()?;
    let n = r.u16("request count").ok()?;
    if r.left() != usize::from(n) * 2 {
        return None;
    }
    let mut reqs = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        reqs.push(InfoType(r.u16("info request").ok()?));
    }
    Some((String::from_utf8_lossy(name).into_owned(), reqs))
}

#[cfg(test)]
mod tests;
