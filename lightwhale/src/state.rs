//! The sleep/wake state machine of one managed container.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Position of a managed container in its sleep/wake cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Running; its traffic is counted.
    Awake,
    /// Being checkpointed; its ports are already held.
    Sleeping,
    /// Stopped with a checkpoint; its ports are held.
    Asleep,
    /// Being restored from its checkpoint.
    Waking,
    /// Stopped by someone else than lightwhale; left alone until it starts.
    Stopped,
}

impl std::fmt::Display for State {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            State::Awake => "awake",
            State::Sleeping => "sleeping",
            State::Asleep => "asleep",
            State::Waking => "waking",
            State::Stopped => "stopped",
        })
    }
}

/// A step of the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A checkpoint is about to start.
    BeginSleep,
    /// The checkpoint succeeded and the container exited.
    FinishSleep,
    /// The checkpoint failed; the container still runs.
    AbortSleep,
    /// A restore is about to start.
    BeginWake,
    /// The restored container accepts connections.
    FinishWake,
    /// The restore failed; the container is still stopped with its checkpoint.
    FailWake,
    /// Docker reports that the container stopped.
    Died,
    /// Docker reports that the container started, by lightwhale or not.
    Started,
}

/// A transition that does not apply to the current state.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("cannot apply {transition:?} to a container that is {state}")]
pub struct InvalidTransition {
    pub state: State,
    pub transition: Transition,
}

impl State {
    /// Returns the state after `transition`, or an error when the
    /// transition does not apply.
    pub fn next(self, transition: Transition) -> Result<State, InvalidTransition> {
        use State::*;
        use Transition::*;

        let next = match (self, transition) {
            (Awake, BeginSleep) => Sleeping,
            (Sleeping, FinishSleep) => Asleep,
            (Sleeping, AbortSleep) => Awake,
            (Asleep, BeginWake) => Waking,
            (Waking, FinishWake) => Awake,
            (Waking, FailWake) => Asleep,
            // A checkpoint with exit and a restore both make Docker report
            // these events while lightwhale drives the change itself.
            (Sleeping, Died) => Sleeping,
            (Waking, Started) => Waking,
            (Asleep, Died) => Asleep,
            // Someone started the sleeping container without its checkpoint:
            // it runs again, with its memory state lost by their choice.
            (Asleep, Started) => Awake,
            (Awake, Died) => Stopped,
            (Stopped, Started) => Awake,
            (Awake, Started) => Awake,
            (Stopped, Died) => Stopped,
            (state, transition) => return Err(InvalidTransition { state, transition }),
        };
        Ok(next)
    }

    /// Returns whether the container's published ports are held by
    /// lightwhale in this state.
    pub fn holds_ports(self) -> bool {
        matches!(self, State::Sleeping | State::Asleep | State::Waking)
    }
}

#[cfg(test)]
mod tests {
    use super::{State::*, Transition::*, *};

    #[test]
    fn full_cycle_returns_to_awake() {
        let mut state = Awake;
        for transition in [BeginSleep, Died, FinishSleep, BeginWake, Started, FinishWake] {
            state = state.next(transition).unwrap();
        }
        assert_eq!(state, Awake);
    }

    #[test]
    fn failed_checkpoint_keeps_container_awake() {
        assert_eq!(Awake.next(BeginSleep).unwrap().next(AbortSleep).unwrap(), Awake);
    }

    #[test]
    fn failed_restore_keeps_container_asleep() {
        assert_eq!(Asleep.next(BeginWake).unwrap().next(FailWake).unwrap(), Asleep);
    }

    #[test]
    fn user_stop_and_start() {
        assert_eq!(Awake.next(Died).unwrap(), Stopped);
        assert_eq!(Stopped.next(Started).unwrap(), Awake);
        assert_eq!(Asleep.next(Started).unwrap(), Awake);
    }

    #[test]
    fn invalid_transitions_are_rejected() {
        for (state, transition) in [
            (Awake, FinishSleep),
            (Asleep, BeginSleep),
            (Sleeping, BeginWake),
            (Waking, BeginSleep),
            (Stopped, BeginSleep),
            (Stopped, BeginWake),
        ] {
            assert_eq!(
                state.next(transition),
                Err(InvalidTransition { state, transition }),
                "{state:?} + {transition:?}"
            );
        }
    }

    #[test]
    fn ports_held_only_while_not_running() {
        assert!(!Awake.holds_ports());
        assert!(Sleeping.holds_ports());
        assert!(Asleep.holds_ports());
        assert!(Waking.holds_ports());
        assert!(!Stopped.holds_ports());
    }
}
