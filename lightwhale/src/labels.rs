//! Container labels that decide whether and how lightwhale manages a
//! container.

use std::{collections::HashMap, time::Duration};

use thiserror::Error;

/// `true` opts a container in, `false` opts it out of `run --all`.
pub const ENABLE: &str = "lightwhale.enable";
/// Idle time before the container is put to sleep, in humantime form
/// (`30s`, `10m`); overrides the daemon's `--idle-timeout`.
pub const IDLE_TIMEOUT: &str = "lightwhale.idle-timeout";
/// Time a woken container has to accept connections on its published
/// ports before its held connections are closed (default 60s).
pub const WAKE_TIMEOUT: &str = "lightwhale.wake-timeout";
/// What to do when a restore fails: `start` (default) starts the container
/// without its checkpoint, losing its memory state but serving its
/// clients; `fail` leaves it stopped and closes the held connections.
pub const ON_RESTORE_FAILURE: &str = "lightwhale.on-restore-failure";
/// Treatment of established TCP connections: `keep-awake` (default)
/// keeps an idle container awake while it has any. `close` lets it sleep
/// and resets them right before the checkpoint.
pub const OPEN_CONNECTIONS: &str = "lightwhale.open-connections";
/// Marks containers and images that the project's own tests create, with
/// `lightwhale.test.*` labels of their own; ignored here.
pub const TEST: &str = "lightwhale.test";

const PREFIX: &str = "lightwhale.";
/// Labels for users; [`TEST`] is accepted too but not advertised.
const KNOWN: [&str; 5] = [ENABLE, IDLE_TIMEOUT, WAKE_TIMEOUT, ON_RESTORE_FAILURE, OPEN_CONNECTIONS];

/// Default of [`WAKE_TIMEOUT`].
pub const DEFAULT_WAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum wake timeout accepted.
pub const MAX_WAKE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Shortest idle timeout accepted. Below it a container would be
/// checkpointed between two requests of an ordinary client.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Maximum idle timeout accepted, to catch typos such as `10d` for `10m`.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Daemon-wide settings that labels refine.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Manage every container unless it opts out (`run --all`).
    pub manage_all: bool,
    /// Idle timeout for containers without their own label.
    pub idle_timeout: Duration,
}

/// Sleep and wake settings of one managed container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Time without traffic before it sleeps.
    pub idle_timeout: Duration,
    /// Time a restored container has to accept connections.
    pub wake_timeout: Duration,
    /// Action after a failed restore.
    pub on_restore_failure: RestoreFailure,
    /// Treatment of established TCP connections.
    pub open_connections: OpenConnections,
}

/// The choices of [`ON_RESTORE_FAILURE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreFailure {
    /// Start the container without its checkpoint.
    Start,
    /// Leave it stopped and close the held connections.
    Fail,
}

/// The choices of [`OPEN_CONNECTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenConnections {
    /// Stay awake while any TCP connection is established, because a
    /// checkpoint cannot save it.
    KeepAwake,
    /// Sleep anyway: the established connections are reset right before
    /// the checkpoint, and their peers see the reset.
    Close,
}

/// The treatment of one container by lightwhale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Management {
    /// Watched, put to sleep after its idle timeout without traffic.
    Managed(Policy),
    /// Not opted in, or opted out: never touched.
    Unmanaged,
    /// Opted in with labels that do not parse: left alone, with the reason
    /// shown by `lightwhale status`.
    Invalid(LabelError),
}

/// A label value that lightwhale cannot use.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LabelError {
    /// The enable label is neither `true` nor `false`.
    #[error("invalid label {ENABLE}={value:?}: expected true or false")]
    InvalidEnable { value: String },
    /// The idle timeout is not a duration.
    #[error("invalid label {IDLE_TIMEOUT}={value:?}: {}", DurationProblem::Unreadable)]
    InvalidDuration { value: String },
    /// The idle timeout is outside the accepted range.
    #[error("invalid label {IDLE_TIMEOUT}={value:?}: {}", DurationProblem::OutOfRange)]
    TimeoutOutOfRange { value: String },
    /// The wake timeout is not a duration or is outside 1s..1h.
    #[error("invalid label {WAKE_TIMEOUT}={value:?}: expected a duration between 1s and 1h, such as 30s or 2m")]
    InvalidWakeTimeout { value: String },
    /// The restore failure choice is unknown.
    #[error("invalid label {ON_RESTORE_FAILURE}={value:?}: expected start or fail")]
    InvalidRestoreFailure { value: String },
    /// The open connections choice is unknown.
    #[error("invalid label {OPEN_CONNECTIONS}={value:?}: expected keep-awake or close")]
    InvalidOpenConnections { value: String },
    /// A `lightwhale.*` label that this version does not know, most likely
    /// a typo that would otherwise be ignored silently.
    #[error("unknown label {label:?}: known labels are {}", KNOWN.join(", "))]
    UnknownLabel { label: String },
}

/// A problem with an idle timeout, worded for both the label and the
/// `--idle-timeout` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationProblem {
    /// Not a number with a unit.
    Unreadable,
    /// Shorter than [`MIN_IDLE_TIMEOUT`] or longer than [`MAX_IDLE_TIMEOUT`].
    OutOfRange,
}

impl std::fmt::Display for DurationProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationProblem::Unreadable => {
                formatter.write_str("expected a number with a unit (s, m, h, d), such as 30s, 10m or 1h30m")
            }
            DurationProblem::OutOfRange => formatter.write_str("must be between 1s and 30d"),
        }
    }
}

/// Decides how to treat a container from its labels.
pub fn management(labels: &HashMap<String, String>, defaults: &Defaults) -> Management {
    let enabled = match labels.get(ENABLE).map(String::as_str) {
        None => defaults.manage_all,
        Some("true") => true,
        Some("false") => false,
        Some(value) => {
            return Management::Invalid(LabelError::InvalidEnable {
                value: value.to_owned(),
            })
        }
    };
    if !enabled {
        return Management::Unmanaged;
    }

    let mut unknown: Vec<&String> = labels
        .keys()
        .filter(|key| key.starts_with(PREFIX) && !is_known(key))
        .collect();
    unknown.sort();
    if let Some(label) = unknown.first() {
        return Management::Invalid(LabelError::UnknownLabel {
            label: (*label).clone(),
        });
    }

    match policy(labels, defaults) {
        Ok(policy) => Management::Managed(policy),
        Err(error) => Management::Invalid(error),
    }
}

/// Reads the policy labels of an opted-in container.
fn policy(labels: &HashMap<String, String>, defaults: &Defaults) -> Result<Policy, LabelError> {
    let idle_timeout = match labels.get(IDLE_TIMEOUT) {
        None => defaults.idle_timeout,
        Some(value) => parse_idle_timeout(value)?,
    };
    let wake_timeout = match labels.get(WAKE_TIMEOUT) {
        None => DEFAULT_WAKE_TIMEOUT,
        Some(value) => humantime::parse_duration(value.trim())
            .ok()
            .filter(|duration| (MIN_IDLE_TIMEOUT..=MAX_WAKE_TIMEOUT).contains(duration))
            .ok_or_else(|| LabelError::InvalidWakeTimeout { value: value.clone() })?,
    };
    let on_restore_failure = match labels.get(ON_RESTORE_FAILURE).map(String::as_str) {
        None | Some("start") => RestoreFailure::Start,
        Some("fail") => RestoreFailure::Fail,
        Some(value) => return Err(LabelError::InvalidRestoreFailure { value: value.to_owned() }),
    };
    let open_connections = match labels.get(OPEN_CONNECTIONS).map(String::as_str) {
        None | Some("keep-awake") => OpenConnections::KeepAwake,
        Some("close") => OpenConnections::Close,
        Some(value) => return Err(LabelError::InvalidOpenConnections { value: value.to_owned() }),
    };
    Ok(Policy { idle_timeout, wake_timeout, on_restore_failure, open_connections })
}

fn is_known(label: &str) -> bool {
    KNOWN.contains(&label) || label == TEST || label.strip_prefix(TEST).is_some_and(|rest| rest.starts_with('.'))
}

/// Parses an idle timeout and checks that it is within the accepted range.
pub fn parse_idle_timeout(value: &str) -> Result<Duration, LabelError> {
    check_idle_timeout(value).map_err(|problem| match problem {
        DurationProblem::Unreadable => LabelError::InvalidDuration { value: value.to_owned() },
        DurationProblem::OutOfRange => LabelError::TimeoutOutOfRange { value: value.to_owned() },
    })
}

/// Parses a humantime duration and checks the accepted range.
pub fn check_idle_timeout(value: &str) -> Result<Duration, DurationProblem> {
    let duration = humantime::parse_duration(value.trim()).map_err(|_| DurationProblem::Unreadable)?;
    if !(MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&duration) {
        return Err(DurationProblem::OutOfRange);
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn default_policy(idle_timeout: Duration) -> Policy {
        Policy {
            idle_timeout,
            wake_timeout: DEFAULT_WAKE_TIMEOUT,
            on_restore_failure: RestoreFailure::Start,
            open_connections: OpenConnections::KeepAwake,
        }
    }

    const DEFAULTS: Defaults = Defaults {
        manage_all: false,
        idle_timeout: Duration::from_secs(600),
    };

    #[test]
    fn unlabelled_container_is_unmanaged() {
        assert_eq!(management(&labels(&[]), &DEFAULTS), Management::Unmanaged);
    }

    #[test]
    fn enable_label_uses_default_timeout() {
        let result = management(&labels(&[(ENABLE, "true")]), &DEFAULTS);
        assert_eq!(result, Management::Managed(default_policy(Duration::from_secs(600))));
    }

    #[test]
    fn manage_all_respects_opt_out() {
        let all = Defaults { manage_all: true, ..DEFAULTS };
        assert_eq!(
            management(&labels(&[]), &all),
            Management::Managed(default_policy(Duration::from_secs(600)))
        );
        assert_eq!(management(&labels(&[(ENABLE, "false")]), &all), Management::Unmanaged);
    }

    #[test]
    fn idle_timeout_label_overrides_default() {
        let result = management(&labels(&[(ENABLE, "true"), (IDLE_TIMEOUT, "30s")]), &DEFAULTS);
        assert_eq!(result, Management::Managed(default_policy(Duration::from_secs(30))));
        let result = management(&labels(&[(ENABLE, "true"), (IDLE_TIMEOUT, "10m")]), &DEFAULTS);
        assert_eq!(result, Management::Managed(default_policy(Duration::from_secs(600))));
    }

    #[test]
    fn bad_labels_are_invalid() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(ENABLE, "yes")], "expected true or false"),
            (&[(ENABLE, "true"), (IDLE_TIMEOUT, "soon")], "expected a number with a unit"),
            (&[(ENABLE, "true"), (IDLE_TIMEOUT, "10")], "expected a number with a unit"),
            (&[(ENABLE, "true"), (IDLE_TIMEOUT, "0s")], "must be between"),
            (&[(ENABLE, "true"), (IDLE_TIMEOUT, "400d")], "must be between"),
            (&[(ENABLE, "true"), ("lightwhale.idle-timout", "3s")], "known labels are lightwhale.enable, lightwhale.idle-timeout"),
            (&[(ENABLE, "true"), (WAKE_TIMEOUT, "0s")], "expected a duration between 1s and 1h"),
            (&[(ENABLE, "true"), (WAKE_TIMEOUT, "2h")], "expected a duration between 1s and 1h"),
            (&[(ENABLE, "true"), (ON_RESTORE_FAILURE, "retry")], "expected start or fail"),
            (&[(ENABLE, "true"), (OPEN_CONNECTIONS, "reset")], "open-connections=\"reset\": expected keep-awake or close"),
            (&[(ENABLE, "true"), (OPEN_CONNECTIONS, "Close")], "open-connections=\"Close\": expected keep-awake or close"),
            (&[(ENABLE, "true"), (OPEN_CONNECTIONS, "")], "open-connections=\"\": expected keep-awake or close"),
        ];
        for (pairs, expected) in cases {
            match management(&labels(pairs), &DEFAULTS) {
                Management::Invalid(error) => {
                    let message = error.to_string();
                    assert!(message.contains(expected), "{pairs:?}: {message}");
                }
                other => panic!("{pairs:?} was accepted as {other:?}"),
            }
        }
    }

    #[test]
    fn policy_labels_parse() {
        let result = management(
            &labels(&[(ENABLE, "true"), (WAKE_TIMEOUT, "2m"), (ON_RESTORE_FAILURE, "fail"), (OPEN_CONNECTIONS, "close")]),
            &DEFAULTS,
        );
        let expected = Policy {
            idle_timeout: Duration::from_secs(600),
            wake_timeout: Duration::from_secs(120),
            on_restore_failure: RestoreFailure::Fail,
            open_connections: OpenConnections::Close,
        };
        assert_eq!(result, Management::Managed(expected));
        let result = management(&labels(&[(ENABLE, "true"), (OPEN_CONNECTIONS, "keep-awake")]), &DEFAULTS);
        assert_eq!(result, Management::Managed(default_policy(Duration::from_secs(600))));
    }

    #[test]
    fn unknown_label_ignored_when_unmanaged() {
        assert_eq!(
            management(&labels(&[("lightwhale.whatever", "1")]), &DEFAULTS),
            Management::Unmanaged
        );
    }

    #[test]
    fn test_label_is_known() {
        let result = management(
            &labels(&[(ENABLE, "true"), (TEST, "1"), ("lightwhale.test.fingerprint", "x")]),
            &DEFAULTS,
        );
        assert_eq!(result, Management::Managed(default_policy(Duration::from_secs(600))));
    }
}
