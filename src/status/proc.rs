//! DRBD 8.4's /proc/drbd text (`drbd_seq_show` in drbd-8.4's `drbd_proc.c`), exactly, so
//! scripts and monitoring written for DRBD parse it.

use std::fmt::Write;

use crate::core::{ConnState, DiskState, Role};

use super::model::{ResourceStatus, VolumeStatus};
use super::progress;

/// The DRBD release whose /proc/drbd urbd reproduces (the header's `version:`).
pub const DRBD_VERSION: &str = "8.4.11";
/// `API_VERSION`, `PRO_VERSION_MIN`, `PRO_VERSION_MAX` of DRBD 8.4.
pub const API_PROTO: &str = "api:1/proto:86-101";

/// The two header lines. DRBD's second line is `GIT-hash: <sha> build by <user>@<host>,
/// <date>`; urbd keeps the `GIT-hash:` key (some parsers expect it) and puts its own
/// version there.
pub fn header() -> String {
    format!(
        "version: {DRBD_VERSION} ({API_PROTO})\nGIT-hash: urbd-{} build by urbd\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Is the minor "Unconfigured" (StandAlone, Diskless, Secondary: what a detached volume
/// without network configuration looks like)?
pub fn is_unconfigured(v: &VolumeStatus) -> bool {
    v.cstate == ConnState::StandAlone && v.disk == DiskState::Diskless && v.role == Role::Secondary
}

/// The lines of one minor (without the blank line DRBD puts before a gap in the minors).
pub fn minor_lines(v: &VolumeStatus) -> String {
    let mut out = String::new();
    if is_unconfigured(v) {
        let _ = writeln!(out, "{:2}: cs:Unconfigured", v.minor);
    } else {
        let c = &v.counters;
        // The six flags: suspended, paused by resync-after, by the peer, by the user,
        // congestion, activity log suspended.
        let susp = if v.suspended { 's' } else { 'r' };
        let peer = if v.peer_isp { 'p' } else { '-' };
        let user = if v.user_isp { 'u' } else { '-' };
        let (aftr, congestion, al_susp) = ('-', '-', '-');
        let _ = writeln!(
            out,
            "{:2}: cs:{} ro:{}/{} ds:{}/{} {} {susp}{aftr}{peer}{user}{congestion}{al_susp}",
            v.minor,
            v.cstate,
            v.role,
            v.peer_role,
            v.disk,
            v.peer_disk,
            v.protocol.unwrap_or(' '),
        );
        let _ = writeln!(
            out,
            "    ns:{} nr:{} dw:{} dr:{} al:{} bm:{} lo:{} pe:{} ua:{} ap:{} ep:{} wo:{} oos:{}",
            c.ns,
            c.nr,
            c.dw,
            c.dr,
            c.al,
            c.bm,
            c.lo,
            c.pe,
            c.ua,
            c.ap,
            c.ep,
            v.write_ordering,
            v.oos_kib
        );
    }
    if let Some(sb) = &v.split_brain {
        // Beyond DRBD (whose /proc/drbd only says StandAlone): one indented line, after the
        // counters, as the progress lines are, so parsers of the two fixed lines are safe.
        let _ = writeln!(
            out,
            "\tsplit-brain: this node changed {} KiB, {} changed {} KiB; see `status`",
            sb.local_changed_kib, sb.peer, sb.peer_changed_kib
        );
    }
    if v.cstate.shows_progress() {
        if let Some(p) = &v.sync {
            out.push_str(&progress::render(p, v.cstate));
        }
    }
    out
}

/// The whole file for the volumes of `resources`, minors in ascending order.
pub fn render(resources: &[ResourceStatus]) -> String {
    let mut volumes: Vec<&VolumeStatus> = resources.iter().flat_map(|r| &r.volumes).collect();
    volumes.sort_by_key(|v| v.minor);
    let mut out = header();
    let mut prev: i64 = -1;
    for v in volumes {
        let minor = i64::from(v.minor);
        // drbd_seq_show: a blank line wherever the minors are not consecutive (also
        // before the first one when it is not 0).
        if prev != minor - 1 {
            out.push('\n');
        }
        prev = minor;
        out.push_str(&minor_lines(v));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::model::Counters;

    pub(crate) fn volume(minor: u32) -> VolumeStatus {
        VolumeStatus {
            ack_latency: None,
            volume: 0,
            minor,
            role: Role::Primary,
            peer_role: Role::Unknown,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::DUnknown,
            cstate: ConnState::StandAlone,
            protocol: None,
            suspended: false,
            user_isp: false,
            peer_isp: false,
            write_ordering: 'f',
            counters: Counters {
                ep: 1,
                ..Counters::default()
            },
            oos_kib: 262_144,
            size_sect: 0,
            uuids: None,
            md_flags: None,
            open_clients: 0,
            sync: None,
            export: None,
            kernel_device: None,
            split_brain: None,
            wfc_degraded: false,
        }
    }

    fn res(volumes: Vec<VolumeStatus>) -> ResourceStatus {
        ResourceStatus {
            resource: "r0".into(),
            node: "alpha".into(),
            pid: 1,
            version: "0.1.0".into(),
            volumes,
        }
    }

    #[test]
    fn standalone_primary() {
        let text = render(&[res(vec![volume(0)])]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("version: 8.4.11 (api:1/proto:86-101)"));
        assert!(lines.next().unwrap().starts_with("GIT-hash: urbd-"));
        assert_eq!(
            lines.next(),
            Some(" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----")
        );
        assert_eq!(
            lines.next(),
            Some("    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:262144")
        );
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn protocol_letter_gaps_and_unconfigured() {
        let mut a = volume(0);
        a.cstate = ConnState::WFConnection;
        a.protocol = Some('C');
        a.role = Role::Secondary;
        a.disk = DiskState::Inconsistent;
        let mut b = volume(3);
        b.cstate = ConnState::StandAlone;
        b.disk = DiskState::Diskless;
        b.role = Role::Secondary;
        let mut c = volume(12);
        c.suspended = true;
        let text = render(&[res(vec![b, c]), res(vec![a])]);
        let body: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            body,
            [
                " 0: cs:WFConnection ro:Secondary/Unknown ds:Inconsistent/DUnknown C r-----",
                "    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:262144",
                "",
                " 3: cs:Unconfigured",
                "",
                "12: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   s-----",
                "    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:262144",
            ]
        );
        // First minor not 0: DRBD starts with a blank line.
        let text = render(&[res(vec![volume(1)])]);
        assert_eq!(text.lines().nth(2), Some(""));
    }

    #[test]
    fn no_resources_is_the_header_only() {
        assert_eq!(render(&[]), header());
    }
}
