//! Changed values to one peer: packed into single packets, sent again until acknowledged or
//! replaced by a newer value, and held back for a later tick when the peer's bandwidth budget
//! cannot take them all (`budget.rs`).

use std::time::Duration;

use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;
use bytes::Bytes;

use super::super::ownership::Ownership;
use super::super::registry::ReplicationRegistry;
use super::super::wire::{GroupHeader, KIND_MUTATE, MutateHeader, entry_len, put_entry};
use super::super::{PeerReplicationStats, ReplicationPriority};
use super::budget::{Candidate, Rate, TokenBucket, Waiting, choose};
use super::interest::PeerView;
use super::net_form;
use crate::channel::Channel;
use crate::endpoint::Endpoint;
use crate::peer::PeerId;
use crate::session::Delivery;

/// A component value of an entity owned here, identified by entity and registration index.
pub(super) type ValueKey = (Entity, u16);

/// A value the peer may not have: sent and not acknowledged yet, or held back by the budget.
#[derive(Debug, Clone, Copy)]
struct Owed {
    /// The tick it last changed: any message of this tick or later carried it as it is.
    tick: u32,
    /// When it last went out (first sent, or resent); `None` when it is due at once: it has not
    /// gone out since it changed (the budget held it back), or the message that carried it was
    /// lost.
    sent_at: Option<Duration>,
    /// What it accumulated while the budget held it back.
    waiting: Option<Waiting>,
}

/// A mutation message in flight: the tick it carried and which values.
#[derive(Debug)]
struct InFlight {
    tick: u32,
    values: Vec<ValueKey>,
}

/// What one peer has been sent.
#[derive(Debug, Default)]
pub(super) struct PeerStream {
    /// Still to be sent every entity (it just connected).
    pub(super) needs_snapshot: bool,
    /// The tick of the snapshot it was sent: mutations need at least that.
    pub(super) snapshot_tick: u32,
    /// The newest value of each entity's component, from when it changes until the peer
    /// acknowledges it.
    owed: HashMap<ValueKey, Owed>,
    /// Mutation messages not yet acknowledged or lost, by delivery token.
    in_flight: HashMap<u64, InFlight>,
    /// Ticks left in which a message with no values goes out when nothing changed: it tells
    /// an interpolating receiver that the values it has are still current, so it holds them
    /// instead of extrapolating past where they stopped. A few, since any of them may be lost.
    quiet_markers: u8,
    /// The bytes replication may send this peer now.
    pub(super) budget: TokenBucket,
    /// What the budget held back so far.
    pub(super) stats: PeerReplicationStats,
}

/// How many value-less mutation messages follow the last one with values.
const QUIET_MARKERS: u8 = 3;

impl PeerStream {
    /// A peer that just connected: it gets a snapshot first.
    pub(super) fn new_peer() -> Self {
        Self {
            needs_snapshot: true,
            ..Default::default()
        }
    }

    /// The peer was sent a snapshot at `tick`: what was in flight or waiting before no longer
    /// matters. Its budget (charged with the snapshot) and figures carry on.
    pub(super) fn snapshot_sent(&mut self, tick: u32) {
        *self = Self {
            snapshot_tick: tick,
            budget: self.budget,
            stats: PeerReplicationStats {
                waiting: 0,
                ..self.stats
            },
            ..Default::default()
        };
    }

    /// An acknowledged value needs no resend; a lost one is due at once. Any message that went
    /// out since the value last changed carried it as it is, so the ack of an earlier resend
    /// counts as much as the latest one's (otherwise a value that stopped changing would be
    /// resent forever whenever acks take longer than the resend interval).
    pub(super) fn delivered(&mut self, token: u64, delivery: Delivery) {
        let Some(in_flight) = self.in_flight.remove(&token) else {
            return;
        };
        for key in in_flight.values {
            if let Some(owed) = self.owed.get_mut(&key)
                && owed.tick <= in_flight.tick
            {
                match delivery {
                    Delivery::Delivered => {
                        self.owed.remove(&key);
                    }
                    Delivery::Lost => owed.sent_at = None,
                }
            }
        }
    }

    /// The peer is no longer shown these entities: their values (sent or waiting for budget)
    /// are owed no more.
    pub(super) fn forget_entities(&mut self, entities: &[Entity]) {
        self.owed
            .retain(|(entity, _), _| !entities.contains(entity));
    }

    /// Values of entities that are no longer ours need no acknowledgement.
    pub(super) fn forget_unowned(&mut self, ownership: &Ownership) {
        self.owed
            .retain(|(entity, _), _| ownership.is_owned(*entity));
    }

    /// The budget held `key` back at `tick` with `score`; `changed` if its value changed this
    /// tick (so it has not gone out as it is now).
    fn hold_back(&mut self, key: ValueKey, score: f32, tick: u32, changed: bool) {
        let owed = self.owe(key, tick);
        if changed {
            owed.tick = tick;
            owed.sent_at = None;
        }
        owed.waiting = Some(Waiting {
            priority: score,
            since: owed.waiting.map_or(tick, |waiting| waiting.since),
        });
    }

    /// What is owed of `key`, a value of `tick` not sent yet if nothing was.
    fn owe(&mut self, key: ValueKey, tick: u32) -> &mut Owed {
        self.owed.entry(key).or_insert(Owed {
            tick,
            sent_at: None,
            waiting: None,
        })
    }

    /// `key` went out at `tick`, at `now`; `changed` if its value changed this tick.
    fn sent(&mut self, key: ValueKey, tick: u32, now: Duration, changed: bool) {
        let owed = self.owe(key, tick);
        if changed {
            owed.tick = tick;
        }
        owed.sent_at = Some(now);
        if let Some(waiting) = owed.waiting.take() {
            let waited = tick.saturating_sub(waiting.since);
            self.stats.longest_wait = self.stats.longest_wait.max(waited);
        }
    }
}

/// A value that changed this tick, encoded in the tick's value buffer.
#[derive(Debug, Clone)]
pub(super) struct ChangedValue {
    pub(super) component: u16,
    pub(super) entity: Entity,
    pub(super) wire: u32,
    /// Where its bytes are in the buffer.
    pub(super) range: std::ops::Range<usize>,
}

/// One value to write into a mutation message.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    component: u16,
    wire: u32,
    entity: Entity,
    bytes: &'a [u8],
}

/// What sending one peer its mutations needs from the tick.
pub(super) struct MutationTick<'a> {
    pub(super) world: &'a World,
    pub(super) registry: &'a ReplicationRegistry,
    pub(super) ownership: &'a Ownership,
    pub(super) endpoint: &'a mut Endpoint,
    pub(super) now: Duration,
    pub(super) tick: u32,
    pub(super) tick_period: Duration,
    /// Values changed this tick, sorted by component.
    pub(super) changed: &'a [ChangedValue],
    pub(super) changed_keys: &'a HashSet<ValueKey>,
    pub(super) values: &'a [u8],
    pub(super) next_token: &'a mut u64,
    /// The per-peer budget, if there is one.
    pub(super) budget: Option<Rate>,
}

impl MutationTick<'_> {
    /// Sends `peer` what changed, plus the values it has not acknowledged for half a round trip
    /// (until acknowledged or superseded) and those the budget held back, as far as its budget
    /// goes. Resending before an ack could arrive costs a little bandwidth for values that
    /// stopped changing, and buys convergence within a few round trips whatever the loss. Only
    /// values of entities `view` shows go out.
    pub(super) fn send_to(&mut self, peer: PeerId, stream: &mut PeerStream, view: &PeerView) {
        let max = self.endpoint.config.max_unreliable_message();
        let owed = self.owed_values(peer, stream, max);
        let mut entries: Vec<Entry<'_>> = self
            .changed
            .iter()
            .map(|value| Entry {
                component: value.component,
                wire: value.wire,
                entity: value.entity,
                bytes: &self.values[value.range.clone()],
            })
            .collect();
        entries.extend(owed.iter().map(|value| Entry {
            component: value.component,
            wire: value.wire,
            entity: value.entity,
            bytes: &value.bytes,
        }));
        entries.retain(|entry| view.shows(entry.wire));
        if entries.is_empty() {
            // Nothing is due, so nothing waits for budget either.
            stream.stats.waiting = 0;
            if stream.quiet_markers > 0 {
                stream.quiet_markers -= 1;
                self.send_quiet_marker(peer, stream);
            }
            return;
        }
        // Values go out or wait: either way no quiet marker may say nothing changed.
        stream.quiet_markers = QUIET_MARKERS;
        if self.budget.is_some() {
            self.keep_within_budget(stream, &mut entries);
        }
        self.send_entries(peer, stream, view, &mut entries, max);
    }

    /// Packs `entries` into messages and sends them, charged to the peer's budget if there is
    /// one.
    fn send_entries(
        &mut self,
        peer: PeerId,
        stream: &mut PeerStream,
        view: &PeerView,
        entries: &mut [Entry<'_>],
        max: usize,
    ) {
        entries.sort_by_key(|entry| entry.component);
        for batch in pack(entries, max) {
            let needs = batch
                .iter()
                .filter_map(|entry| {
                    let owned = self.ownership.owned(entry.entity)?;
                    Some(owned.struct_tick.max(view.needs(entry.wire)))
                })
                .max()
                .unwrap_or(0)
                .max(stream.snapshot_tick);
            let mut message = Vec::with_capacity(max);
            self.header(needs).encode(&mut message);
            write_groups(&mut message, batch);
            let size = message.len();
            *self.next_token += 1;
            let token = *self.next_token;
            let sent = self.endpoint.send(
                peer,
                Channel::Unreliable,
                KIND_MUTATE,
                Bytes::from(message),
                Some(token),
            );
            if sent.is_err() {
                continue;
            }
            if let Some(rate) = self.budget {
                stream.budget.charge(size, rate);
            }
            let values: Vec<ValueKey> = batch
                .iter()
                .map(|entry| (entry.entity, entry.component))
                .collect();
            for key in &values {
                let changed = self.changed_keys.contains(key);
                stream.sent(*key, self.tick, self.now, changed);
            }
            stream.in_flight.insert(
                token,
                InFlight {
                    tick: self.tick,
                    values,
                },
            );
        }
    }

    /// Keeps the entries that fit the peer's budget now, highest accumulated priority first;
    /// the others wait for a later tick with what they accumulated.
    fn keep_within_budget(&self, stream: &mut PeerStream, entries: &mut Vec<Entry<'_>>) {
        let available = stream.budget.available();
        let cost = |entry: &Entry<'_>| entry_len(entry.wire, entry.bytes);
        // Group headers and further message headers are left out: the charge after sending is
        // exact, so they come out of the next tick's budget.
        let overhead = MutateHeader::MAX_LEN;
        let demand: usize = entries.iter().map(cost).sum::<usize>() + overhead;
        if demand <= available {
            stream.stats.waiting = 0;
            return;
        }
        let mut candidates: Vec<Candidate> = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let key = (entry.entity, entry.component);
                let waiting = stream.owed.get(&key).and_then(|owed| owed.waiting);
                Candidate {
                    index,
                    score: Candidate::score(
                        self.world.get::<ReplicationPriority>(entry.entity),
                        waiting,
                    ),
                    size: cost(entry),
                    entity: entry.entity,
                    component: entry.component,
                }
            })
            .collect();
        let fit = choose(&mut candidates, available.saturating_sub(overhead));
        let mut keep = vec![false; entries.len()];
        for candidate in &candidates[..fit] {
            keep[candidate.index] = true;
        }
        for candidate in &candidates[fit..] {
            let key = (candidate.entity, candidate.component);
            let changed = self.changed_keys.contains(&key);
            stream.hold_back(key, candidate.score, self.tick, changed);
        }
        let held = (candidates.len() - fit) as u64;
        stream.stats.deferred += held;
        stream.stats.waiting = held as usize;
        let mut index = 0;
        entries.retain(|_| {
            index += 1;
            keep[index - 1]
        });
    }

    fn header(&self, needs: u32) -> MutateHeader {
        MutateHeader {
            tick: self.tick,
            needs,
            time: self.now.as_micros() as u64,
        }
    }

    /// A mutation message with no values: nothing changed up to now. Not resent if lost.
    fn send_quiet_marker(&mut self, peer: PeerId, stream: &PeerStream) {
        let mut message = Vec::with_capacity(MutateHeader::MAX_LEN);
        self.header(stream.snapshot_tick).encode(&mut message);
        let _ = self.endpoint.send(
            peer,
            Channel::Unreliable,
            KIND_MUTATE,
            Bytes::from(message),
            None,
        );
    }

    /// Values owed to `peer` that are due: held back by the budget, lost, or not acknowledged
    /// within the resend interval; encoded as they are now (never an older value).
    fn owed_values(&self, peer: PeerId, stream: &mut PeerStream, max: usize) -> Vec<OwedValue> {
        // An ack comes back a round trip plus the time the peer holds it for its next frame
        // (the round-trip figure leaves that out).
        let ack_time = self
            .endpoint
            .stats(peer)
            .and_then(|stats| Some(stats.rtt? + stats.ack_delay))
            .unwrap_or(Duration::from_millis(100));
        let interval = (ack_time / 2)
            .max(self.tick_period * 2)
            .max(Duration::from_millis(20));
        let mut due = Vec::new();
        let mut stale = Vec::new();
        for (key, owed) in &stream.owed {
            let waited_enough = owed
                .sent_at
                .is_none_or(|sent_at| self.now.saturating_sub(sent_at) >= interval);
            if self.changed_keys.contains(key) || !waited_enough {
                continue;
            }
            let (entity, component) = *key;
            let (Some(owned), Some(registration)) =
                (self.ownership.owned(entity), self.registry.get(component))
            else {
                stale.push(*key);
                continue;
            };
            let mut bytes = Vec::new();
            let mut to_net = |e| net_form(self.world, e);
            let encoded = registration
                .erased
                .encode(self.world, entity, &mut to_net, &mut bytes);
            if encoded && bytes.len() + 16 <= max {
                due.push(OwedValue {
                    component,
                    wire: owned.wire,
                    entity,
                    bytes,
                });
            } else {
                stale.push(*key);
            }
        }
        for key in stale {
            stream.owed.remove(&key);
        }
        due
    }
}

/// An owed value, encoded afresh.
struct OwedValue {
    component: u16,
    wire: u32,
    entity: Entity,
    bytes: Vec<u8>,
}

/// Splits entries (sorted by component) into batches whose message fits `max` bytes.
fn pack<'e, 'b>(entries: &'e [Entry<'b>], max: usize) -> Vec<&'e [Entry<'b>]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = MutateHeader::MAX_LEN;
    let mut group: Option<u16> = None;
    for (index, entry) in entries.iter().enumerate() {
        let group_header = if group == Some(entry.component) {
            0
        } else {
            GroupHeader::MAX_LEN
        };
        let len = entry_len(entry.wire, entry.bytes);
        if index > start && size + group_header + len > max {
            batches.push(&entries[start..index]);
            start = index;
            size = MutateHeader::MAX_LEN + GroupHeader::MAX_LEN + len;
        } else {
            size += group_header + len;
        }
        group = Some(entry.component);
    }
    if start < entries.len() {
        batches.push(&entries[start..]);
    }
    batches
}

/// Writes entries (sorted by component) as groups.
fn write_groups(out: &mut Vec<u8>, entries: &[Entry<'_>]) {
    for group in entries.chunk_by(|a, b| a.component == b.component) {
        GroupHeader {
            component: group[0].component,
            count: group.len() as u32,
        }
        .encode(out);
        for entry in group {
            put_entry(out, entry.wire, entry.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(component: u16, bytes: &[u8]) -> Entry<'_> {
        Entry {
            component,
            wire: 1,
            entity: Entity::PLACEHOLDER,
            bytes,
        }
    }

    #[test]
    fn batches_fit_the_limit_and_keep_every_entry() {
        let value = [7u8; 100];
        let entries: Vec<Entry<'_>> = (0..40).map(|i| entry(i / 10, &value)).collect();
        let batches = pack(&entries, 1146);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 40);
        for batch in &batches {
            let mut out = Vec::new();
            MutateHeader {
                tick: u32::MAX,
                needs: u32::MAX,
                time: u64::MAX,
            }
            .encode(&mut out);
            write_groups(&mut out, batch);
            assert!(
                out.len() <= 1146,
                "a batch of {} entries is {} bytes",
                batch.len(),
                out.len()
            );
        }
        assert!(
            batches.len() <= 4,
            "about eleven 101-byte entries per packet"
        );
    }

    #[test]
    fn the_ack_of_an_earlier_resend_settles_a_value_that_stopped_changing() {
        let key = (Entity::PLACEHOLDER, 3);
        let mut stream = PeerStream::default();
        // Changed at tick 5 and sent; resent at ticks 7 and 9 before any ack came back.
        stream.owed.insert(
            key,
            Owed {
                tick: 5,
                sent_at: Some(Duration::from_millis(90)),
                waiting: None,
            },
        );
        for (token, tick) in [(1, 5), (2, 7), (3, 9)] {
            stream.in_flight.insert(
                token,
                InFlight {
                    tick,
                    values: vec![key],
                },
            );
        }
        stream.delivered(1, Delivery::Delivered);
        assert!(
            stream.owed.is_empty(),
            "the first ack carried the value as it still is: no more resends"
        );
        // A value that changed after the acked message is still owed.
        stream.owed.insert(
            key,
            Owed {
                tick: 10,
                sent_at: None,
                waiting: None,
            },
        );
        stream.delivered(3, Delivery::Delivered);
        assert!(
            stream.owed.contains_key(&key),
            "tick 9 did not carry the tick-10 value"
        );
    }
}
