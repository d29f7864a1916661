//! State changes in the style of DRBD 9's `drbdsetup events2` (what `urbdadm events`
//! prints): one line per object and event,
//!
//! ```text
//! exists resource name:r0 role:Secondary suspended:no
//! exists device name:r0 volume:0 minor:0 disk:UpToDate client:no open:no
//! exists connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary
//! exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
//! exists -
//! change resource name:r0 role:Primary
//! destroy resource name:r0
//! ```
//!
//! `exists` describes the state when the stream starts, up to the `exists -` marker;
//! `create` and `destroy` are a daemon starting and stopping; a `change` line names the
//! object and only the fields that changed (drbd-utils' tests/v9/events2-*.test show the
//! format). DRBD 8.4 connection states map onto DRBD 9's connection and replication states:
//! WFConnection and WFReportParams are `connection:Connecting`, a Connected link without
//! a resync is `replication:Established`, and no link is `replication:Off`.
//!
//! Pure: [`objects`] turns a status into event objects, [`diff`] two snapshots into lines.

use crate::core::{ConnState, Role};

use super::ResourceStatus;

/// Who the peer is, from the configuration (the status does not carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    /// Its `peer-node-id`: the position of its `on` section in the resource (DRBD 9's
    /// implicit node ids of a two-node resource).
    pub node_id: usize,
    /// Its `conn-name`: the name of its `on` section.
    pub name: String,
}

/// One object of the event stream: its kind, the fields that name it, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `resource`, `device`, `connection` or `peer-device`.
    pub kind: &'static str,
    /// Identifying fields (`name`, `volume`, `minor`, `peer-node-id`, `conn-name`).
    pub ids: Vec<(&'static str, String)>,
    /// State fields.
    pub fields: Vec<(&'static str, String)>,
}

impl Object {
    fn line(&self, event: &str, fields: &[(&'static str, String)]) -> String {
        let mut s = format!("{event} {}", self.kind);
        for (k, v) in self.ids.iter().chain(fields) {
            s.push_str(&format!(" {k}:{v}"));
        }
        s
    }

    fn same_object(&self, other: &Object) -> bool {
        self.kind == other.kind && self.ids == other.ids
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// DRBD 9's connection state for an 8.4 one.
pub fn connection_state(c: ConnState) -> &'static str {
    match c {
        ConnState::WFConnection | ConnState::WFReportParams => "Connecting",
        c if c >= ConnState::Connected => "Connected",
        c => c.as_str(),
    }
}

/// DRBD 9's replication state for an 8.4 connection state.
pub fn replication_state(c: ConnState) -> &'static str {
    match c {
        ConnState::Connected => "Established",
        c if c > ConnState::Connected => c.as_str(),
        _ => "Off",
    }
}

/// The event objects of one running resource, in events2's order: the resource, its
/// devices, the connection, the peer devices.
pub fn objects(status: &ResourceStatus, peer: Option<&PeerId>) -> Vec<Object> {
    let name = status.resource.clone();
    let mut out = vec![Object {
        kind: "resource",
        ids: vec![("name", name.clone())],
        fields: vec![
            ("role", status.role().as_str().to_owned()),
            (
                "suspended",
                yes_no(status.volumes.iter().any(|v| v.suspended)),
            ),
        ],
    }];
    for v in &status.volumes {
        out.push(Object {
            kind: "device",
            ids: vec![
                ("name", name.clone()),
                ("volume", v.volume.to_string()),
                ("minor", v.minor.to_string()),
            ],
            fields: vec![
                ("disk", v.disk.as_str().to_owned()),
                ("client", "no".to_owned()),
                ("open", yes_no(v.open_clients > 0)),
            ],
        });
    }
    let Some(peer) = peer else {
        return out;
    };
    let peer_ids = || {
        vec![
            ("name", name.clone()),
            ("peer-node-id", peer.node_id.to_string()),
            ("conn-name", peer.name.clone()),
        ]
    };
    // One connection per resource: the worst volume's state stands for it (they move
    // together; a resource has one link).
    let cstate = status
        .volumes
        .iter()
        .map(|v| v.cstate)
        .min()
        .unwrap_or(ConnState::StandAlone);
    let peer_role = status
        .volumes
        .first()
        .map_or(Role::Unknown, |v| v.peer_role);
    out.push(Object {
        kind: "connection",
        ids: peer_ids(),
        fields: vec![
            ("connection", connection_state(cstate).to_owned()),
            ("role", peer_role.as_str().to_owned()),
        ],
    });
    for v in &status.volumes {
        let mut ids = peer_ids();
        ids.push(("volume", v.volume.to_string()));
        let suspended = match (v.user_isp, v.peer_isp) {
            (true, _) => "user",
            (false, true) => "peer",
            (false, false) => "no",
        };
        out.push(Object {
            kind: "peer-device",
            ids,
            fields: vec![
                ("replication", replication_state(v.cstate).to_owned()),
                ("peer-disk", v.peer_disk.as_str().to_owned()),
                ("peer-client", "no".to_owned()),
                ("resync-suspended", suspended.to_owned()),
            ],
        });
    }
    out
}

/// The `exists` lines of a snapshot, with the closing `exists -`.
pub fn exists(now: &[Object]) -> Vec<String> {
    let mut lines: Vec<String> = now.iter().map(|o| o.line("exists", &o.fields)).collect();
    lines.push("exists -".to_owned());
    lines
}

/// The lines that lead from `before` to `now`: `destroy` for objects gone (children
/// first), `create` for new ones, `change` with the changed fields for the others.
pub fn diff(before: &[Object], now: &[Object]) -> Vec<String> {
    let mut lines = Vec::new();
    for old in before.iter().rev() {
        if !now.iter().any(|o| o.same_object(old)) {
            lines.push(old.line("destroy", &[]));
        }
    }
    for o in now {
        match before.iter().find(|b| b.same_object(o)) {
            None => lines.push(o.line("create", &o.fields)),
            Some(b) => {
                let changed: Vec<(&'static str, String)> = o
                    .fields
                    .iter()
                    .filter(|f| !b.fields.contains(f))
                    .cloned()
                    .collect();
                if !changed.is_empty() {
                    lines.push(o.line("change", &changed));
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DiskState;

    fn status(role: Role, cstate: ConnState, peer_disk: DiskState) -> ResourceStatus {
        let mut v = crate::status::proc::tests::volume(0);
        v.role = role;
        v.cstate = cstate;
        v.peer_disk = peer_disk;
        v.peer_role = if cstate >= ConnState::Connected {
            Role::Secondary
        } else {
            Role::Unknown
        };
        ResourceStatus {
            resource: "r0".into(),
            node: "alpha".into(),
            pid: 1,
            version: "0".into(),
            volumes: vec![v],
        }
    }

    fn peer() -> PeerId {
        PeerId {
            node_id: 1,
            name: "beta".into(),
        }
    }

    #[test]
    fn exists_then_changes_in_events2_form() {
        let a = objects(
            &status(
                Role::Secondary,
                ConnState::WFConnection,
                DiskState::DUnknown,
            ),
            Some(&peer()),
        );
        let lines = exists(&a);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(
            lines[0],
            "exists resource name:r0 role:Secondary suspended:no"
        );
        assert!(
            lines[1].starts_with("exists device name:r0 volume:0 minor:0 disk:"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "exists connection name:r0 peer-node-id:1 conn-name:beta connection:Connecting role:Unknown"
        );
        assert_eq!(
            lines[3],
            "exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Off \
             peer-disk:DUnknown peer-client:no resync-suspended:no"
        );
        assert_eq!(lines[4], "exists -");

        let b = objects(
            &status(
                Role::Primary,
                ConnState::SyncSource,
                DiskState::Inconsistent,
            ),
            Some(&peer()),
        );
        assert_eq!(
            diff(&a, &b),
            [
                "change resource name:r0 role:Primary",
                "change connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary",
                "change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 \
                 replication:SyncSource peer-disk:Inconsistent",
            ]
        );
        assert!(diff(&b, &b).is_empty());
        assert_eq!(
            diff(&b, &[]),
            [
                "destroy peer-device name:r0 peer-node-id:1 conn-name:beta volume:0",
                "destroy connection name:r0 peer-node-id:1 conn-name:beta",
                "destroy device name:r0 volume:0 minor:0",
                "destroy resource name:r0",
            ]
        );
        let created = diff(&[], &b);
        assert_eq!(
            created[0],
            "create resource name:r0 role:Primary suspended:no"
        );
        assert_eq!(created.len(), 4);
    }

    #[test]
    fn drbd_9_names_for_84_states() {
        assert_eq!(connection_state(ConnState::StandAlone), "StandAlone");
        assert_eq!(connection_state(ConnState::WFReportParams), "Connecting");
        assert_eq!(connection_state(ConnState::PausedSyncT), "Connected");
        assert_eq!(replication_state(ConnState::WFConnection), "Off");
        assert_eq!(replication_state(ConnState::Connected), "Established");
        assert_eq!(replication_state(ConnState::VerifyS), "VerifyS");
    }
}
