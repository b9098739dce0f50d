//! The reconciliation's self-check: do the socket tables agree with the TCP state changes
//! the kernel program counted in between?
//!
//! The gauges come from the socket tables, so there is nothing to correct in them. What can
//! disagree is the event view: between two snapshots, node-wide socket counts per state must
//! move exactly as the counted transitions say. Whatever the transitions cannot explain is a
//! correction the snapshot made (a state change the program missed, or one this model of
//! the kernel gets wrong). Sockets changing state while the tables are being read may be
//! seen in either state, so every transition counted during a read is allowed as slack.
//!
//! Only states that transitions fully describe are checked: not `time_wait` (the timewait
//! socket lives outside `inet_sock_set_state`), `syn_recv` (request sockets have no state
//! changes of their own) or `bound_inactive` (`bind()` changes no state).

use std::collections::BTreeMap;

use super::TcpState;

/// Cumulative node-wide transition counts, `(old, new) -> count`, as read from the kernel.
pub type Transitions = BTreeMap<(TcpState, TcpState), u64>;

/// Node-wide TCP socket counts by state, from one snapshot.
pub type Totals = BTreeMap<TcpState, u64>;

/// States whose counts the transitions fully explain.
const CHECKED: [TcpState; 8] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Listen,
    TcpState::Closing,
];

/// What the previous snapshot left for the next check.
#[derive(Debug, Default)]
pub struct Consistency {
    previous: Option<Previous>,
}

#[derive(Debug)]
struct Previous {
    totals: Totals,
    /// Transitions as read right after the previous snapshot's tables.
    after: Transitions,
    /// Per state, transitions counted while the previous tables were read.
    slack: BTreeMap<TcpState, u64>,
}

impl Consistency {
    /// Forgets the previous snapshot: the next one only sets the base to compare with.
    pub fn restart(&mut self) {
        self.previous = None;
    }

    /// Checks one snapshot: `before` and `after` are the transition counts read just before
    /// and just after its tables. Returns the sockets the transitions could not explain, or
    /// `None` for the first snapshot (nothing to compare with).
    pub fn check(
        &mut self,
        before: &Transitions,
        totals: Totals,
        after: Transitions,
    ) -> Option<u64> {
        let slack_now = touched(&difference(&after, before));
        let corrections = self.previous.as_ref().map(|previous| {
            let between = difference(before, &previous.after);
            let mut predicted: BTreeMap<TcpState, i64> = CHECKED
                .iter()
                .map(|state| {
                    (
                        *state,
                        to_i64(previous.totals.get(state).copied().unwrap_or(0)),
                    )
                })
                .collect();
            for (&(old, new), &count) in &between {
                // A child socket is cloned from its listener with the listener's state:
                // LISTEN -> SYN_RECV is a new socket, not the listener leaving LISTEN.
                if !(old == TcpState::Listen && new == TcpState::SynRecv)
                    && let Some(value) = predicted.get_mut(&old)
                {
                    *value -= to_i64(count);
                }
                if let Some(value) = predicted.get_mut(&new) {
                    *value += to_i64(count);
                }
            }
            CHECKED
                .iter()
                .map(|state| {
                    let observed = to_i64(totals.get(state).copied().unwrap_or(0));
                    let slack = to_i64(
                        previous.slack.get(state).copied().unwrap_or(0)
                            + slack_now.get(state).copied().unwrap_or(0),
                    );
                    u64::try_from(((observed - predicted[state]).abs() - slack).max(0)).unwrap_or(0)
                })
                .sum()
        });
        self.previous = Some(Previous {
            totals,
            after,
            slack: slack_now,
        });
        corrections
    }
}

/// `later - earlier`, per transition (counters only grow; a reset reads as 0).
fn difference(later: &Transitions, earlier: &Transitions) -> Transitions {
    later
        .iter()
        .map(|(&key, &count)| {
            (
                key,
                count.saturating_sub(earlier.get(&key).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Per state, how many of `transitions` entered or left it.
fn touched(transitions: &Transitions) -> BTreeMap<TcpState, u64> {
    let mut touched = BTreeMap::new();
    for (&(old, new), &count) in transitions {
        *touched.entry(old).or_default() += count;
        *touched.entry(new).or_default() += count;
    }
    touched
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::{Close, Established, FinWait1, FinWait2, Listen, SynRecv, SynSent};

    fn transitions(entries: &[((TcpState, TcpState), u64)]) -> Transitions {
        entries.iter().copied().collect()
    }

    fn totals(entries: &[(TcpState, u64)]) -> Totals {
        entries.iter().copied().collect()
    }

    #[test]
    fn transitions_explain_the_change_between_snapshots() {
        let mut check = Consistency::default();
        let start = transitions(&[((Close, Listen), 1)]);
        assert_eq!(
            check.check(&start, totals(&[(Listen, 1)]), start.clone()),
            None
        );
        // Two clients connect to the listener and stay; one more connects and closes.
        let later = transitions(&[
            ((Close, Listen), 1),
            ((Close, SynSent), 3),
            ((SynSent, Established), 3),
            ((Listen, SynRecv), 3),
            ((SynRecv, Established), 3),
            ((Established, FinWait1), 1),
            ((FinWait1, FinWait2), 1),
            ((FinWait2, Close), 1),
            ((Established, TcpState::CloseWait), 1),
            ((TcpState::CloseWait, TcpState::LastAck), 1),
            ((TcpState::LastAck, Close), 1),
        ]);
        let observed = totals(&[(Listen, 1), (Established, 4)]);
        assert_eq!(check.check(&later, observed, later.clone()), Some(0));
    }

    #[test]
    fn what_the_transitions_cannot_explain_is_a_correction() {
        let mut check = Consistency::default();
        let none = Transitions::new();
        assert_eq!(
            check.check(&none, totals(&[(Established, 2)]), none.clone()),
            None
        );
        // Five established sockets appeared without a single transition.
        assert_eq!(
            check.check(&none, totals(&[(Established, 7)]), none.clone()),
            Some(5)
        );
        // TIME_WAIT is not checked: it never has transitions of its own.
        assert_eq!(
            check.check(
                &none,
                totals(&[(Established, 7), (TcpState::TimeWait, 40)]),
                none.clone()
            ),
            Some(0)
        );
    }

    #[test]
    fn transitions_during_a_read_are_allowed_as_slack() {
        let mut check = Consistency::default();
        let none = Transitions::new();
        assert_eq!(check.check(&none, totals(&[]), none.clone()), None);
        // Two connections opened while the tables were read: seen or not, no correction.
        let during = transitions(&[((Close, SynSent), 2), ((SynSent, Established), 2)]);
        assert_eq!(
            check.check(&none, totals(&[(Established, 1)]), during),
            Some(0)
        );
    }
}
