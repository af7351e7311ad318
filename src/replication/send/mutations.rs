//! Changed values to one peer: packed into single packets, sent again until acknowledged or
//! replaced by a newer value, and held back for a later tick when the peer's bandwidth budget
//! cannot take them all (`budget.rs`).

use std::time::Duration;

use bevy::platform::collections::HashSet;
use bevy::prelude::*;
use bytes::Bytes;

use super::super::ReplicationPriority;
use super::super::ownership::Ownership;
use super::super::registry::ReplicationRegistry;
use super::super::wire::{
    EntryForm, GroupHeader, KIND_MUTATE, MutateHeader, delta_entry_len, entry_len, put_delta_entry,
    put_entry,
};
use super::baselines::{Form, common_age, form_of};
use super::budget::{Candidate, Rate, choose};
use super::interest::PeerView;
use super::net_form;
use super::stream::{InFlight, PeerStream, QUIET_MARKERS};
use crate::channel::Channel;
use crate::endpoint::Endpoint;
use crate::peer::PeerId;
use crate::wire::varint_len;

/// A component value of an entity owned here, identified by entity and registration index.
pub(super) type ValueKey = (Entity, u16);

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
    /// The value's full encoding.
    bytes: &'a [u8],
    form: Form,
    /// Which send of it to this peer this is, when it may become a baseline.
    send: u32,
}

impl Entry<'_> {
    /// Bytes the entry takes after an entry for `previous` (none: first of its group) in a group
    /// whose baseline age is `common`.
    fn len(&self, previous: Option<u32>, common: u32) -> usize {
        let gap = self.wire.wrapping_sub(previous.unwrap_or(0));
        match self.form {
            Form::Plain => entry_len(self.wire, self.bytes),
            Form::Whole => {
                delta_entry_len(gap, EntryForm::Whole(self.bytes.len() as u32)) + self.bytes.len()
            }
            Form::Delta { age, start, end } => {
                let form = if age == common {
                    EntryForm::FromGroupBase
                } else {
                    EntryForm::FromAge(age)
                };
                delta_entry_len(gap, form) + (end - start) as usize
            }
        }
    }

    /// About the bytes it takes, wherever it goes: for the budget.
    fn cost(&self) -> usize {
        match self.form {
            Form::Plain => entry_len(self.wire, self.bytes),
            Form::Whole => 1 + varint_len(self.bytes.len() as u64) + self.bytes.len(),
            Form::Delta { start, end, .. } => 1 + (end - start) as usize,
        }
    }
}

/// The entries of one message, with what writing them needs.
struct Batch<'e, 'b> {
    entries: &'e [Entry<'b>],
    /// The baseline age of each component's group of differences.
    common: &'e [(u16, u32)],
    /// The tick's differences, which [`Form::Delta`] points into.
    differences: &'e [u8],
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
    /// Whether values of components with a delta codec go as differences.
    pub(super) deltas: bool,
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
                form: Form::Plain,
                send: 0,
            })
            .collect();
        entries.extend(owed.iter().map(|value| Entry {
            component: value.component,
            wire: value.wire,
            entity: value.entity,
            bytes: &value.bytes,
            form: Form::Plain,
            send: 0,
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
        let mut differences = Vec::new();
        if self.deltas {
            for entry in &mut entries {
                let key = (entry.entity, entry.component);
                (entry.form, entry.send) = form_of(
                    self.registry,
                    &mut stream.baselines,
                    self.tick,
                    &key,
                    entry.bytes,
                    &mut differences,
                );
            }
        }
        if self.budget.is_some() {
            self.keep_within_budget(stream, &mut entries);
        }
        self.send_entries(peer, stream, view, &mut entries, &differences, max);
    }

    /// Packs `entries` into messages and sends them, charged to the peer's budget if there is
    /// one.
    fn send_entries(
        &mut self,
        peer: PeerId,
        stream: &mut PeerStream,
        view: &PeerView,
        entries: &mut [Entry<'_>],
        differences: &[u8],
        max: usize,
    ) {
        // By entity number within each component: groups of differences name each entity by
        // the gap from the previous one.
        entries.sort_unstable_by_key(|entry| (entry.component, entry.wire));
        let common: Vec<(u16, u32)> = entries
            .chunk_by(|a, b| a.component == b.component)
            .map(|group| {
                let forms = group.iter().map(|entry| entry.form);
                (group[0].component, common_age(forms))
            })
            .collect();
        for entries in pack(entries, &common, max) {
            let batch = Batch {
                entries,
                common: &common,
                differences,
            };
            let needs = batch
                .entries
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
            batch.write(&mut message);
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
            let mut in_flight = InFlight {
                tick: self.tick,
                ..Default::default()
            };
            for entry in batch.entries {
                let key = (entry.entity, entry.component);
                let changed = self.changed_keys.contains(&key);
                stream.sent(key, self.tick, self.now, changed);
                if let Form::Delta { .. } = entry.form {
                    stream.stats.differences += 1;
                }
                if entry.form != Form::Plain {
                    in_flight.carried.push(key, entry.send, entry.bytes);
                }
                in_flight.values.push(key);
            }
            stream.in_flight.insert(token, in_flight);
        }
    }

    /// Keeps the entries that fit the peer's budget now, highest accumulated priority first;
    /// the others wait for a later tick with what they accumulated.
    fn keep_within_budget(&self, stream: &mut PeerStream, entries: &mut Vec<Entry<'_>>) {
        let available = stream.budget.available();
        let cost = Entry::cost;
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

/// Splits entries (sorted by component, then entity) into batches whose message fits `max`
/// bytes.
fn pack<'e, 'b>(
    entries: &'e [Entry<'b>],
    common: &[(u16, u32)],
    max: usize,
) -> Vec<&'e [Entry<'b>]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = MutateHeader::MAX_LEN;
    let mut group: Option<u16> = None;
    let mut previous: Option<u32> = None;
    for (index, entry) in entries.iter().enumerate() {
        let new_group = group != Some(entry.component);
        if new_group {
            previous = None;
        }
        let group_header = if new_group { GroupHeader::MAX_LEN } else { 0 };
        let age = common_of(common, entry.component);
        let len = entry.len(previous, age);
        if index > start && size + group_header + len > max {
            batches.push(&entries[start..index]);
            start = index;
            size = MutateHeader::MAX_LEN + GroupHeader::MAX_LEN + entry.len(None, age);
        } else {
            size += group_header + len;
        }
        group = Some(entry.component);
        previous = Some(entry.wire);
    }
    if start < entries.len() {
        batches.push(&entries[start..]);
    }
    batches
}

/// The baseline age of `component`'s group.
fn common_of(common: &[(u16, u32)], component: u16) -> u32 {
    common
        .iter()
        .find(|(of, _)| *of == component)
        .map_or(0, |(_, age)| *age)
}

impl Batch<'_, '_> {
    /// Writes the entries as groups.
    fn write(&self, out: &mut Vec<u8>) {
        for group in self.entries.chunk_by(|a, b| a.component == b.component) {
            let component = group[0].component;
            if group[0].form == Form::Plain {
                GroupHeader {
                    component,
                    count: group.len() as u32,
                    base: None,
                }
                .encode(out);
                for entry in group {
                    put_entry(out, entry.wire, entry.bytes);
                }
                continue;
            }
            let common = common_of(self.common, component);
            GroupHeader {
                component,
                count: group.len() as u32,
                base: Some(common),
            }
            .encode(out);
            let mut previous = 0;
            for entry in group {
                let gap = entry.wire.wrapping_sub(previous);
                previous = entry.wire;
                match entry.form {
                    Form::Delta { age, start, end } => {
                        let form = if age == common {
                            EntryForm::FromGroupBase
                        } else {
                            EntryForm::FromAge(age)
                        };
                        put_delta_entry(out, gap, form);
                        out.extend_from_slice(&self.differences[start as usize..end as usize]);
                    }
                    Form::Plain | Form::Whole => {
                        put_delta_entry(out, gap, EntryForm::Whole(entry.bytes.len() as u32));
                        out.extend_from_slice(entry.bytes);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(component: u16, wire: u32, bytes: &[u8], form: Form) -> Entry<'_> {
        Entry {
            component,
            wire,
            entity: Entity::PLACEHOLDER,
            bytes,
            form,
            send: 0,
        }
    }

    #[test]
    fn batches_fit_the_limit_and_keep_every_entry() {
        let value = [7u8; 100];
        let differences = [3u8; 60];
        let forms = |i: u32| match i % 3 {
            0 => Form::Whole,
            1 => Form::Delta {
                age: 2,
                start: 0,
                end: 60,
            },
            _ => Form::Delta {
                age: 300,
                start: 10,
                end: 50,
            },
        };
        // Two plain groups, then two groups of differences.
        let entries: Vec<Entry<'_>> = (0..80)
            .map(|i| match i / 20 {
                group @ 0..2 => entry(group as u16, i * 1000, &value, Form::Plain),
                group => entry(group as u16, i * 1000, &value, forms(i)),
            })
            .collect();
        let common = [(2, 2), (3, 2)];
        let batches = pack(&entries, &common, 1146);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 80);
        for entries in &batches {
            let mut out = Vec::new();
            MutateHeader {
                tick: u32::MAX,
                needs: u32::MAX,
                time: u64::MAX,
            }
            .encode(&mut out);
            let batch = Batch {
                entries,
                common: &common,
                differences: &differences,
            };
            batch.write(&mut out);
            assert!(
                out.len() <= 1146,
                "a batch of {} entries is {} bytes",
                entries.len(),
                out.len()
            );
        }
        assert!(
            batches.len() <= 7,
            "about eleven 102-byte entries per packet, or more differences"
        );
    }
}
