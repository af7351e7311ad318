//! An owner's mutation messages: applied once the update they need is, the newest value of each
//! entity's component winning. Values sent as differences are rebuilt from the baselines kept
//! for that owner (`baselines.rs`) as soon as their message arrives, even when it must wait for
//! its update: later differences may be from its values.

use bevy::prelude::*;
use bytes::Bytes;

use super::super::codec::DeltaCodec;
use super::super::interpolation;
use super::super::registry::Registration;
use super::super::wire::{
    EntryForm, GroupHeader, KIND_REFUSED, MutateHeader, Refused, put_entry, read_delta_entry,
    read_wire,
};
use super::baselines::ReceivedBaselines;
use super::{Apply, ReceiveState, RefusedValue};
use crate::channel::Channel;
use crate::error::InputError;
use crate::net::NetEndpoint;
use crate::peer::PeerId;
use crate::wire::{Reader, WireError};

/// At most this many values refused in one frame are reported per owner; the owner's next
/// differences from what it lacks are refused again.
const MAX_REFUSED: usize = 4096;

/// Refused values per message: each takes at most eight bytes.
const REFUSED_PER_MESSAGE: usize = 120;

/// The entries of one group of differences, read in order.
struct Differences<'r> {
    component: u16,
    /// The group's baseline age.
    base: u32,
    /// The message's tick.
    tick: u32,
    codec: &'r dyn DeltaCodec,
    name: &'static str,
    /// The previous entry's entity number.
    previous: u32,
}

impl<'r> Differences<'r> {
    /// The reader of `group`, if it is a group of differences.
    fn of(
        group: &GroupHeader,
        registration: &'r Registration,
        tick: u32,
    ) -> Result<Option<Self>, InputError> {
        let Some(base) = group.base else {
            return Ok(None);
        };
        let codec =
            registration
                .delta
                .as_deref()
                .ok_or(InputError::Malformed(WireError::OutOfRange(
                    "differences of a component this peer sends whole",
                )))?;
        Ok(Some(Self {
            component: group.component,
            base,
            tick,
            codec,
            name: registration.name,
            previous: 0,
        }))
    }

    /// Reads the next entry: its entity number, and whether `value` now holds its whole value
    /// (false: it is a difference from a value not kept here, skipped). A whole value is kept as
    /// a baseline for later differences, if there is room: at most `limit` entities' components.
    fn next(
        &mut self,
        reader: &mut Reader<'_>,
        baselines: &mut ReceivedBaselines,
        limit: usize,
        value: &mut Vec<u8>,
    ) -> Result<(u32, bool), InputError> {
        let (gap, form) = read_delta_entry(reader)?;
        let wire = self
            .previous
            .checked_add(gap)
            .ok_or(InputError::Malformed(WireError::OutOfRange("entity")))?;
        self.previous = wire;
        value.clear();
        let kept = baselines.kept(wire, self.component);
        let age = match form {
            EntryForm::Whole(len) => {
                value.extend_from_slice(reader.bytes(len as usize)?);
                None
            }
            EntryForm::FromGroupBase => Some(self.base),
            EntryForm::FromAge(age) => Some(age),
        };
        if let Some(age) = age {
            let baseline = self
                .tick
                .checked_sub(age)
                .filter(|_| age > 0)
                .and_then(|tick| kept.as_deref()?.get(tick));
            let mut input = reader.rest();
            let read = match baseline {
                Some(baseline) => self.codec.decode_delta(baseline, &mut input, value),
                None => self.codec.skip_delta(&mut input),
            };
            read.map_err(|error| InputError::Decode {
                type_name: self.name,
                error: error.0,
            })?;
            reader.bytes(reader.remaining() - input.len())?;
            if baseline.is_none() {
                return Ok((wire, false));
            }
        }
        match kept {
            Some(kept) => kept.keep(self.tick, value),
            None => baselines.keep(wire, self.component, self.tick, value, limit),
        }
        Ok((wire, true))
    }
}

impl Apply<'_> {
    pub(super) fn mutation(&mut self, sender: PeerId, message: Bytes) {
        let needs = match MutateHeader::decode(&mut Reader::new(&message)) {
            Ok(header) => header.needs,
            Err(error) => return self.reject(sender, InputError::Malformed(error)),
        };
        let stream = self.streams.entry(sender).or_default();
        if stream.update_tick >= needs {
            self.apply_mutation(sender, &message);
            return;
        }
        let message = match self.rebuilt(sender, &message) {
            Ok(message) => message,
            Err(error) => return self.reject(sender, error),
        };
        let limit = self.config.mutation_buffer;
        let stream = self.streams.entry(sender).or_default();
        stream.buffered.push_back((needs, message));
        while stream.buffered.len() > limit {
            stream.buffered.pop_front();
        }
    }

    pub(super) fn apply_mutation(&mut self, sender: PeerId, message: &[u8]) {
        let result = self.try_apply_mutation(sender, message);
        // Values written outside a mutation (spawns, insertions) have no send time.
        interpolation::end_message(self.world);
        if let Err(error) = result {
            self.reject(sender, error);
        }
    }

    fn try_apply_mutation(&mut self, sender: PeerId, message: &[u8]) -> Result<(), InputError> {
        let mut reader = Reader::new(message);
        let header = MutateHeader::decode(&mut reader)?;
        // Interpolated components buffer the values with their time instead of showing them.
        interpolation::begin_message(self.world, sender, header.time, self.now);
        let mut baselines = self.take_baselines(sender);
        let result = self.apply_groups(sender, header.tick, &mut reader, &mut baselines);
        self.streams.entry(sender).or_default().baselines = baselines;
        result
    }

    fn apply_groups(
        &mut self,
        sender: PeerId,
        tick: u32,
        reader: &mut Reader<'_>,
        baselines: &mut ReceivedBaselines,
    ) -> Result<(), InputError> {
        let registry = self.registry;
        let limit = self.baseline_limit();
        let mut value = Vec::new();
        while !reader.is_empty() {
            let group = GroupHeader::decode(reader)?;
            let registration = registry.get(group.component).ok_or(InputError::Malformed(
                WireError::OutOfRange("component index"),
            ))?;
            let decode_error = |error: super::super::codec::CodecError| InputError::Decode {
                type_name: registration.name,
                error: error.0,
            };
            let Some(mut differences) = Differences::of(&group, registration, tick)? else {
                // Each entry takes at least one byte, so the input bounds the loop, not the count.
                for _ in 0..group.count {
                    let wire = read_wire(reader)?;
                    let mut input = reader.rest();
                    self.apply_value(
                        sender,
                        registration,
                        group.component,
                        tick,
                        wire,
                        &mut input,
                    )
                    .map_err(decode_error)?;
                    reader.bytes(reader.remaining() - input.len())?;
                }
                continue;
            };
            for _ in 0..group.count {
                let (wire, whole) = differences.next(reader, baselines, limit, &mut value)?;
                if !whole {
                    self.refuse(sender, tick, group.component, wire);
                    continue;
                }
                let mut input = value.as_slice();
                self.apply_value(
                    sender,
                    registration,
                    group.component,
                    tick,
                    wire,
                    &mut input,
                )
                .map_err(decode_error)?;
                if !input.is_empty() {
                    return Err(decode_error(super::super::codec::CodecError(format!(
                        "{} bytes left over",
                        input.len()
                    ))));
                }
            }
        }
        Ok(())
    }

    /// Applies the value at the front of `input` if it is newer than what `wire`'s entity has,
    /// or keeps it for a claim that waits; skips it otherwise.
    fn apply_value(
        &mut self,
        sender: PeerId,
        registration: &Registration,
        component: u16,
        tick: u32,
        wire: u32,
        input: &mut &[u8],
    ) -> Result<(), super::super::codec::CodecError> {
        // Newer than what was applied: its tick is recorded now (one lookup, not two). If the
        // value then fails to decode, the whole message is rejected as malformed.
        if let Some(entity) = self.ownership.newer(sender, wire, component, tick) {
            return self.decode_onto(sender, &*registration.erased, entity, input);
        }
        let value = *input;
        registration.erased.decode_skip(input)?;
        let value = &value[..value.len() - input.len()];
        self.authority
            .later_value(sender, wire, component, tick, Some(value));
        Ok(())
    }

    /// A mutation message that must wait for its update, with its differences rebuilt into
    /// whole values now (and their baselines kept).
    fn rebuilt(&mut self, sender: PeerId, message: &[u8]) -> Result<Bytes, InputError> {
        let mut reader = Reader::new(message);
        let header = MutateHeader::decode(&mut reader)?;
        let mut out = Vec::with_capacity(message.len() * 2);
        header.encode(&mut out);
        let mut baselines = self.take_baselines(sender);
        let result =
            self.rebuild_groups(sender, header.tick, &mut reader, &mut baselines, &mut out);
        self.streams.entry(sender).or_default().baselines = baselines;
        result.map(|()| Bytes::from(out))
    }

    fn rebuild_groups(
        &mut self,
        sender: PeerId,
        tick: u32,
        reader: &mut Reader<'_>,
        baselines: &mut ReceivedBaselines,
        out: &mut Vec<u8>,
    ) -> Result<(), InputError> {
        let registry = self.registry;
        let limit = self.baseline_limit();
        let mut value = Vec::new();
        let mut entries = Vec::new();
        while !reader.is_empty() {
            let group = GroupHeader::decode(reader)?;
            let registration = registry.get(group.component).ok_or(InputError::Malformed(
                WireError::OutOfRange("component index"),
            ))?;
            entries.clear();
            let mut count = 0;
            match Differences::of(&group, registration, tick)? {
                None => {
                    for _ in 0..group.count {
                        let wire = read_wire(reader)?;
                        let mut input = reader.rest();
                        registration
                            .erased
                            .decode_skip(&mut input)
                            .map_err(|error| InputError::Decode {
                                type_name: registration.name,
                                error: error.0,
                            })?;
                        put_entry(
                            &mut entries,
                            wire,
                            reader.bytes(reader.remaining() - input.len())?,
                        );
                        count += 1;
                    }
                }
                Some(mut differences) => {
                    for _ in 0..group.count {
                        let (wire, whole) =
                            differences.next(reader, baselines, limit, &mut value)?;
                        if whole {
                            put_entry(&mut entries, wire, &value);
                            count += 1;
                        } else {
                            self.refuse(sender, tick, group.component, wire);
                        }
                    }
                }
            }
            GroupHeader {
                component: group.component,
                count,
                base: None,
            }
            .encode(out);
            out.extend_from_slice(&entries);
        }
        Ok(())
    }

    /// How many components' values one owner's baselines may hold here.
    fn baseline_limit(&self) -> usize {
        let sent_as_differences = self
            .registry
            .components
            .iter()
            .filter(|registration| registration.delta.is_some())
            .count();
        self.config
            .max_entities_per_peer
            .saturating_mul(sent_as_differences)
    }

    fn take_baselines(&mut self, sender: PeerId) -> ReceivedBaselines {
        std::mem::take(&mut self.streams.entry(sender).or_default().baselines)
    }

    /// `wire`'s value of `component` in `sender`'s message of `tick` was a difference from a
    /// value not kept here: the owner is asked for it whole.
    fn refuse(&mut self, sender: PeerId, tick: u32, component: u16, wire: u32) {
        let stream = self.streams.entry(sender).or_default();
        if stream.refused.len() < MAX_REFUSED {
            stream.refused.push(RefusedValue {
                tick,
                component,
                wire,
            });
        }
    }

    /// `sender`'s entity `wire` is gone: so are the baselines of its values.
    pub(super) fn forget_baselines(&mut self, sender: PeerId, wire: u32) {
        if let Some(stream) = self.streams.get_mut(&sender) {
            stream.baselines.forget(wire);
        }
    }
}

/// Asks each owner for the values that could not be read this frame.
pub(super) fn send_refusals(world: &mut World) {
    let refused: Vec<(PeerId, Vec<RefusedValue>)> = world
        .resource_mut::<ReceiveState>()
        .streams
        .iter_mut()
        .filter(|(_, stream)| !stream.refused.is_empty())
        .map(|(peer, stream)| (*peer, std::mem::take(&mut stream.refused)))
        .collect();
    let mut endpoint = world.resource_mut::<NetEndpoint>();
    for (peer, mut values) in refused {
        tracing::debug!(
            "{} values from {peer} were differences from values not kept here; asked whole",
            values.len()
        );
        values.sort_unstable();
        values.dedup();
        for same_tick in values.chunk_by(|a, b| a.tick == b.tick) {
            for chunk in same_tick.chunks(REFUSED_PER_MESSAGE) {
                let message = Refused {
                    tick: chunk[0].tick,
                    values: chunk
                        .iter()
                        .map(|value| (value.component, value.wire))
                        .collect(),
                };
                let mut bytes = Vec::new();
                message.encode(&mut bytes);
                let _ = endpoint.0.send(
                    peer,
                    Channel::Unreliable,
                    KIND_REFUSED,
                    Bytes::from(bytes),
                    None,
                );
            }
        }
    }
}
