//! The status report of `lightwhale status`, as JSON and as a table.

use std::{fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{clock, daemon::Daemon, idle, lifecycle::WakePhases};

/// Every managed or unmanageable container, and the holder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// The holder's connections over all containers.
    #[serde(default)]
    pub holder: HolderStatus,
    /// Containers sorted by name.
    pub containers: Vec<ContainerStatus>,
}

/// Connection counts of the holder, over all containers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HolderStatus {
    /// Connections held or relayed now.
    pub open_connections: u64,
    /// Connections closed at once since the daemon started, because the
    /// holder or their container had its maximum of connections open.
    pub rejected_connections: u64,
}

/// One container's line of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Full container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// `awake`, `sleeping`, `asleep`, `waking`, `stopped` or `unmanageable`.
    pub state: String,
    /// Reason the container is unmanageable.
    pub reason: Option<String>,
    /// Key of its entry in the pinned `activity` map.
    pub slot: Option<u32>,
    /// Idle time after which it sleeps.
    pub idle_timeout_ms: u64,
    /// Time since its last packet, or since it woke if that is later.
    pub idle_for_ms: Option<u64>,
    /// Wall-clock time of its last packet, RFC 3339.
    pub last_activity: Option<String>,
    /// Bytes sent to the container.
    pub rx_bytes: u64,
    /// Bytes sent by the container.
    pub tx_bytes: u64,
    /// Packets sent to the container.
    pub rx_packets: u64,
    /// Packets sent by the container.
    pub tx_packets: u64,
    /// Memory use just before the last checkpoint.
    pub memory_freed_bytes: Option<u64>,
    /// Checkpoint it sleeps in, or was last restored from.
    pub checkpoint: Option<String>,
    /// Completed checkpoints.
    pub sleeps: u64,
    /// Completed restores.
    pub wakes: u64,
    /// Duration of the last checkpoint.
    pub last_sleep_ms: Option<u64>,
    /// Duration of the last restore until its ports accepted connections.
    pub last_wake_ms: Option<u64>,
    /// Phases of the last restore.
    pub last_wake_phases: Option<WakePhases>,
    /// The last checkpoint or restore error.
    pub last_error: Option<String>,
    /// Connections the holder accepted for this container. Once it is
    /// awake, connections go straight to it and are not counted here.
    pub held_connections: u64,
    /// Connections for this container that the holder closed at once
    /// because it or the container had its maximum of connections open.
    pub rejected_connections: u64,
    /// Id of the stand-in that keeps its names and addresses while it
    /// sleeps.
    pub stand_in: Option<String>,
}

impl Daemon {
    /// Builds the status report.
    pub fn status(&self) -> StatusReport {
        let now = clock::monotonic_ns();
        let containers = self
            .registry()
            .all()
            .into_iter()
            .map(|container| {
                let activity = container
                    .slot
                    .map(|slot| self.data_plane().activity(slot))
                    .unwrap_or_default();
                let record = container.record();
                let managed = record.unmanageable.is_none();
                let state = match &record.unmanageable {
                    Some(_) => "unmanageable".to_owned(),
                    None => record.state.to_string(),
                };
                let last_activity = (activity.last_seen_ns > 0).then(|| {
                    humantime::format_rfc3339_seconds(clock::wall_time(activity.last_seen_ns)).to_string()
                });
                ContainerStatus {
                    id: container.id.clone(),
                    name: record.info.name.clone(),
                    state,
                    reason: record.unmanageable.clone(),
                    slot: container.slot,
                    idle_timeout_ms: record.policy.idle_timeout.as_millis() as u64,
                    idle_for_ms: managed.then(|| {
                        idle::idle_for(now, activity.last_seen_ns, record.awake_since_ns).as_millis() as u64
                    }),
                    last_activity,
                    rx_bytes: activity.rx_bytes,
                    tx_bytes: activity.tx_bytes,
                    rx_packets: activity.rx_packets,
                    tx_packets: activity.tx_packets,
                    memory_freed_bytes: record.memory_freed,
                    checkpoint: record.checkpoint.clone(),
                    sleeps: record.sleeps,
                    wakes: record.wakes,
                    last_sleep_ms: record.last_sleep.map(|elapsed| elapsed.as_millis() as u64),
                    last_wake_ms: record.last_wake.map(|elapsed| elapsed.as_millis() as u64),
                    last_wake_phases: record.last_wake_phases,
                    last_error: record.last_error.clone(),
                    held_connections: record.held_connections,
                    rejected_connections: record.rejected_connections,
                    stand_in: record.stand_in.as_ref().map(|(id, _)| id.clone()),
                }
            })
            .collect();
        let holder = HolderStatus {
            open_connections: self.holder.open_connections(),
            rejected_connections: self.holder.rejected_connections(),
        };
        StatusReport { holder, containers }
    }
}

/// Renders the report as an aligned table, with reasons and errors below.
pub fn render_table(report: &StatusReport) -> String {
    let headers = ["NAME", "ID", "STATE", "IDLE FOR", "LAST ACTIVITY", "IN", "OUT", "FREED", "SLEEPS", "WAKES"];
    let rows: Vec<[String; 10]> = report
        .containers
        .iter()
        .map(|container| {
            [
                container.name.clone(),
                container.id.chars().take(12).collect(),
                container.state.clone(),
                container
                    .idle_for_ms
                    .map(|ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string())
                    .unwrap_or_else(|| "-".into()),
                container.last_activity.clone().unwrap_or_else(|| "-".into()),
                format_bytes(container.rx_bytes),
                format_bytes(container.tx_bytes),
                container.memory_freed_bytes.map(format_bytes).unwrap_or_else(|| "-".into()),
                container.sleeps.to_string(),
                container.wakes.to_string(),
            ]
        })
        .collect();

    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    let mut push_row = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(table, "{}", line.join("  ").trim_end());
    };
    push_row(&headers.map(str::to_owned));
    for row in &rows {
        push_row(row);
    }
    for container in &report.containers {
        if let Some(reason) = &container.reason {
            let _ = writeln!(table, "{}: not managed: {reason}", container.name);
        }
        if let Some(error) = &container.last_error {
            let _ = writeln!(table, "{}: last error: {error}", container.name);
        }
        if container.rejected_connections > 0 {
            let _ = writeln!(
                table,
                "{}: {} connections rejected over the holder's limits",
                container.name, container.rejected_connections
            );
        }
    }
    table
}

/// Formats a byte count with a binary unit.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(268 * 1024 * 1024), "268.0 MiB");
    }

    #[test]
    fn table_lists_reasons() {
        let report = StatusReport {
            holder: HolderStatus::default(),
            containers: vec![ContainerStatus {
                id: "0123456789abcdef".into(),
                name: "web".into(),
                state: "unmanageable".into(),
                reason: Some("network mode host".into()),
                slot: None,
                idle_timeout_ms: 600_000,
                idle_for_ms: None,
                last_activity: None,
                rx_bytes: 0,
                tx_bytes: 0,
                rx_packets: 0,
                tx_packets: 0,
                memory_freed_bytes: None,
                checkpoint: None,
                sleeps: 0,
                wakes: 0,
                last_sleep_ms: None,
                last_wake_ms: None,
                last_wake_phases: None,
                last_error: None,
                held_connections: 0,
                rejected_connections: 3,
                stand_in: None,
            }],
        };
        let table = render_table(&report);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("0123456789ab"), "{table}");
        assert!(table.contains("web: not managed: network mode host"), "{table}");
        assert!(table.contains("web: 3 connections rejected over the holder's limits"), "{table}");
    }
}
