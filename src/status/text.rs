//! What `role`, `cstate`, `dstate` print (drbdsetup 8.4's `role_scmd`, `cstate_scmd`,
//! `dstate_scmd`) and the DRBD 9 style `status` (drbdsetup 8.4's `status_cmd`, which
//! already prints the 9.x layout).

use std::fmt::Write;

use super::model::{ResourceStatus, SplitBrainStatus, VolumeStatus};

/// A volume with no disk and no network configuration prints as `Unconfigured`.
fn unconfigured(v: &VolumeStatus) -> bool {
    v.cstate == crate::core::ConnState::StandAlone && v.disk == crate::core::DiskState::Diskless
}

/// `role`: `Primary/Unknown`.
pub fn role_line(v: &VolumeStatus) -> String {
    if unconfigured(v) {
        "Unconfigured".into()
    } else {
        format!("{}/{}", v.role, v.peer_role)
    }
}

/// `cstate`: `StandAlone`.
pub fn cstate_line(v: &VolumeStatus) -> String {
    if unconfigured(v) {
        "Unconfigured".into()
    } else {
        v.cstate.to_string()
    }
}

/// `dstate`: `UpToDate/DUnknown`.
pub fn dstate_line(v: &VolumeStatus) -> String {
    if unconfigured(v) {
        "Unconfigured".into()
    } else {
        format!("{}/{}", v.disk, v.peer_disk)
    }
}

/// DRBD 9's connection-state names for the `status` command (`drbd_conn_str9`).
fn conn_str9(c: crate::core::ConnState) -> &'static str {
    use crate::core::ConnState;
    match c {
        ConnState::WFConnection => "Connecting",
        ConnState::WFReportParams => "Connected",
        other => other.as_str(),
    }
}

/// `status` for one resource, DRBD 9 style, without terminal wrapping:
///
/// ```text
/// optzimbra role:Primary
///   disk:UpToDate
///
/// ```
///
/// Beyond DRBD: under each volume, `export:` names where NBD clients connect and `device:`
/// says whether the kernel device is attached (`/dev/nbd0 attached`, or why not, plainly:
/// for instance a kernel without the nbd module has no /dev/nbdN).
///
/// A single volume 0 is shown without its number; the peer line appears only while a
/// network configuration exists (drbdsetup lists no connection for a StandAlone
/// resource).
pub fn status(r: &ResourceStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} role:{}", r.resource, r.role());
    let single = r.volumes.len() == 1 && r.volumes[0].volume == 0;
    for v in &r.volumes {
        if single {
            let _ = writeln!(out, "  disk:{}", v.disk);
        } else {
            let _ = writeln!(out, "  volume:{} disk:{}", v.volume, v.disk);
        }
        if let Some(export) = &v.export {
            let _ = writeln!(out, "    export:{export}");
        }
        if let Some(dev) = &v.kernel_device {
            let _ = writeln!(out, "    device:{dev}");
        }
    }
    if let Some(first) = r.volumes.iter().find(|v| v.protocol.is_some()) {
        let c = first.cstate;
        if c < crate::core::ConnState::WFReportParams {
            let _ = writeln!(out, "  peer connection:{}", conn_str9(c));
        } else {
            let _ = writeln!(out, "  peer role:{}", first.peer_role);
            for v in &r.volumes {
                let indent = if single {
                    "    ".to_string()
                } else {
                    format!("    volume:{}", v.volume)
                };
                let sep = if single { "" } else { " " };
                if v.cstate > crate::core::ConnState::WFReportParams
                    && v.cstate != crate::core::ConnState::Connected
                {
                    let _ = writeln!(
                        out,
                        "{indent}{sep}replication:{} peer-disk:{}",
                        v.cstate, v.peer_disk
                    );
                } else {
                    let _ = writeln!(out, "{indent}{sep}peer-disk:{}", v.peer_disk);
                }
            }
        }
    }
    for v in &r.volumes {
        if let Some(sb) = &v.split_brain {
            split_brain_advice(&mut out, r, v, sb);
        }
    }
    out.push('\n');
    out
}

/// What `status` adds on a split-brained volume: how much each side changed and the exact
/// commands of the seed's recovery (section 7.2.2) for either choice of victim.
fn split_brain_advice(
    out: &mut String,
    r: &ResourceStatus,
    v: &VolumeStatus,
    sb: &SplitBrainStatus,
) {
    let res = &r.resource;
    let me = &r.node;
    let peer = &sb.peer;
    let label = if r.volumes.len() == 1 && v.volume == 0 {
        String::new()
    } else {
        format!(" (volume {})", v.volume)
    };
    let _ = writeln!(
        out,
        "  split-brain{label}: both nodes changed data while disconnected; connecting is refused until you pick a victim"
    );
    let _ = writeln!(
        out,
        "    {me} (this node) changed {} KiB, {peer} changed {} KiB",
        sb.local_changed_kib, sb.peer_changed_kib
    );
    let fmt = |u: &[u64; 4]| format!("{:016X}:{:016X}:{:016X}:{:016X}", u[0], u[1], u[2], u[3]);
    let _ = writeln!(
        out,
        "    UUIDs: {me} {}, {peer} {}",
        fmt(&sb.local_uuids),
        fmt(&sb.peer_uuids)
    );
    let _ = writeln!(
        out,
        "    The victim's changes are thrown away; it resyncs the blocks either side changed."
    );
    for (keep, victim) in [(me.as_str(), peer.as_str()), (peer.as_str(), me.as_str())] {
        let _ = writeln!(
            out,
            "    To keep {keep}'s data (discard {victim}'s changes):"
        );
        let _ = writeln!(
            out,
            "      on {victim}: urbdadm disconnect {res}; urbdadm secondary {res}; urbdadm connect --discard-my-data {res}"
        );
        let _ = writeln!(
            out,
            "      on {keep}: urbdadm disconnect {res}; urbdadm connect {res}"
        );
    }
    let _ = writeln!(
        out,
        "    (stop what uses the victim's device first: `secondary` refuses while it is open)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ConnState, DiskState, Role};
    use crate::status::model::Counters;

    fn v(volume: u32) -> VolumeStatus {
        VolumeStatus {
            ack_latency: None,
            volume,
            minor: volume,
            role: Role::Secondary,
            peer_role: Role::Unknown,
            disk: DiskState::Inconsistent,
            peer_disk: DiskState::DUnknown,
            cstate: ConnState::StandAlone,
            protocol: None,
            suspended: false,
            user_isp: false,
            peer_isp: false,
            write_ordering: 'f',
            counters: Counters::default(),
            oos_kib: 0,
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

    fn r(volumes: Vec<VolumeStatus>) -> ResourceStatus {
        ResourceStatus {
            resource: "optzimbra".into(),
            node: "astapor".into(),
            pid: 1,
            version: "0".into(),
            volumes,
        }
    }

    #[test]
    fn lines() {
        let mut a = v(0);
        assert_eq!(role_line(&a), "Secondary/Unknown");
        assert_eq!(cstate_line(&a), "StandAlone");
        assert_eq!(dstate_line(&a), "Inconsistent/DUnknown");
        a.disk = DiskState::Diskless;
        assert_eq!(role_line(&a), "Unconfigured");
        assert_eq!(dstate_line(&a), "Unconfigured");
    }

    /// A split-brained volume: what each side changed and the seed's commands (7.2.2) for
    /// either victim.
    #[test]
    fn split_brain_names_changes_and_commands() {
        let mut a = v(0);
        a.role = Role::Primary;
        a.disk = DiskState::UpToDate;
        a.protocol = Some('C');
        a.split_brain = Some(crate::status::SplitBrainStatus {
            peer: "braavos".into(),
            local_changed_kib: 8,
            peer_changed_kib: 4096,
            local_uuids: [0xA1, 0xB1, 0, 0],
            peer_uuids: [0xA2, 0xB1, 0, 0],
        });
        let s = status(&r(vec![a]));
        let want = "optzimbra role:Primary
  disk:UpToDate
  peer connection:StandAlone
  split-brain: both nodes changed data while disconnected; connecting is refused until you pick a victim
    astapor (this node) changed 8 KiB, braavos changed 4096 KiB
    UUIDs: astapor 00000000000000A1:00000000000000B1:0000000000000000:0000000000000000, braavos 00000000000000A2:00000000000000B1:0000000000000000:0000000000000000
    The victim's changes are thrown away; it resyncs the blocks either side changed.
    To keep astapor's data (discard braavos's changes):
      on braavos: urbdadm disconnect optzimbra; urbdadm secondary optzimbra; urbdadm connect --discard-my-data optzimbra
      on astapor: urbdadm disconnect optzimbra; urbdadm connect optzimbra
    To keep braavos's data (discard astapor's changes):
      on astapor: urbdadm disconnect optzimbra; urbdadm secondary optzimbra; urbdadm connect --discard-my-data optzimbra
      on braavos: urbdadm disconnect optzimbra; urbdadm connect optzimbra
    (stop what uses the victim's device first: `secondary` refuses while it is open)

";
        assert_eq!(s, want);
    }

    #[test]
    fn status_layouts() {
        assert_eq!(
            status(&r(vec![v(0)])),
            "optzimbra role:Secondary\n  disk:Inconsistent\n\n"
        );
        let mut a = v(0);
        a.role = Role::Primary;
        a.disk = DiskState::UpToDate;
        a.protocol = Some('C');
        a.cstate = ConnState::WFConnection;
        let mut b = v(1);
        b.protocol = Some('C');
        b.cstate = ConnState::WFConnection;
        assert_eq!(
            status(&r(vec![a, b])),
            "optzimbra role:Primary\n  volume:0 disk:UpToDate\n  volume:1 disk:Inconsistent\n  \
             peer connection:Connecting\n\n"
        );
    }
}
