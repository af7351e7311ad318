//! The replication messages as bytes.
//!
//! Each owner sends two streams to every peer, numbered by its own network tick:
//!
//! ```text
//! update   (reliable, kind 1) := (tick << 2 | ends << 1 | begins):varint op*   structural changes of one tick
//! op       := 0x01 wire:varint net_id:u64 flags:u8 n:varint (component:varint len:varint bytes)^n   spawn
//!           | 0x02 wire:varint n:varint (component:varint len:varint bytes)^n                       insert
//!           | 0x03 wire:varint n:varint component:varint^n                                          remove
//!           | 0x04 wire:varint                                                                      despawn
//!           | 0x05 wire:varint to:u128                                                              hand over
//! mutate   (unreliable, kind 2) := tick:varint needs:varint time:varint group*
//! group    := (component << 1):varint n:varint (wire:varint value)^n                    whole values
//!           | (component << 1 | 1):varint n:varint base:varint entry^n                 differences
//! entry    := (gap << 2 | 0):varint delta                     from the value of tick (tick - base)
//!           | (gap << 2 | 1):varint age:varint delta          from the value of tick (tick - age)
//!           | (gap << 2 | 2):varint len:varint value          whole
//! ```
//!
//! `wire` is the sender's own short number for an entity it owns; `net_id` names the entity in
//! the whole room (entity references inside components travel as net ids). A mutation message
//! `needs` the sender's update of that tick to have been applied first (the spawn of the
//! entities it mutates). `time` is the sender's clock in µs when it collected the values (its
//! `Time<Real>` elapsed, the clock its session's time frames carry), so a receiver that
//! interpolates knows when each value was true (see [`interpolation`](super::interpolation)); a
//! mutation message with no group says that nothing else changed up to that time. Mutation values carry no length: their codec reads exactly what it
//! wrote, which keeps a moving entity at 15 bytes with the transform codec.
//!
//! Components with a [`DeltaCodec`](super::codec::DeltaCodec) go in groups of differences: each
//! entry names its entity by the `gap` from the previous entry's number (the entries are sorted),
//! and holds its value whole or as the difference from the value of an earlier tick the receiver
//! acknowledged (see `send/baselines.rs`); `base` is the age most entries of the group use. A
//! whole value carries its length there, so a receiver can keep it as a baseline without decoding
//! it twice.

use bytes::Bytes;

use crate::peer::PeerId;
use crate::wire::{Reader, WireError, put_varint, varint_len};

/// Message kind of update messages (reliable channel).
pub(crate) const KIND_UPDATE: u16 = 1;
/// Message kind of mutation messages (unreliable channel).
pub(crate) const KIND_MUTATE: u16 = 2;
/// Message kind of the values a receiver could not read as differences (unreliable channel).
pub(crate) const KIND_REFUSED: u16 = 8;

const OP_SPAWN: u8 = 0x01;
const OP_INSERT: u8 = 0x02;
const OP_REMOVE: u8 = 0x03;
const OP_DESPAWN: u8 = 0x04;
const OP_HAND_OVER: u8 = 0x05;

const FLAG_HOST_OWNED: u8 = 0x01;
const FLAG_HAND_TO_HOST: u8 = 0x02;

/// Most operations or components one message may list: bounds what a decoder allocates.
const MAX_COUNT: u64 = 1 << 20;

/// How an entity behaves when owners come and go, as announced with its spawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct SpawnFlags {
    /// A world entity: it belongs to whoever is host ([`HostOwned`](super::HostOwned)).
    pub(crate) host_owned: bool,
    /// When its owner leaves, the host takes it over
    /// ([`HandToHostOnLeave`](super::HandToHostOnLeave)).
    pub(crate) hand_to_host: bool,
}

impl SpawnFlags {
    /// Whether the host takes the entity when its owner is gone.
    pub(crate) fn follows_host(self) -> bool {
        self.host_owned || self.hand_to_host
    }

    fn to_byte(self) -> u8 {
        (if self.host_owned { FLAG_HOST_OWNED } else { 0 })
            | if self.hand_to_host {
                FLAG_HAND_TO_HOST
            } else {
                0
            }
    }

    fn from_byte(byte: u8) -> Result<Self, WireError> {
        if byte & !(FLAG_HOST_OWNED | FLAG_HAND_TO_HOST) != 0 {
            return Err(WireError::OutOfRange("spawn flags"));
        }
        Ok(Self {
            host_owned: byte & FLAG_HOST_OWNED != 0,
            hand_to_host: byte & FLAG_HAND_TO_HOST != 0,
        })
    }
}

/// One encoded component value: its registration index and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentValue {
    pub(crate) component: u16,
    pub(crate) bytes: Bytes,
}

/// An entity as its owner announces it: new, taken over, or in a snapshot for a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spawn {
    /// The sender's number for it.
    pub(crate) wire: u32,
    /// Its room-wide id.
    pub(crate) net_id: u64,
    pub(crate) flags: SpawnFlags,
    /// Every replicated component it has: a spawn is the whole state.
    pub(crate) components: Vec<ComponentValue>,
}

/// One structural change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpdateOp {
    /// The sender owns this entity (new, or taken over) with these components.
    Spawn(Spawn),
    /// Components added to an entity the sender owns.
    Insert {
        wire: u32,
        components: Vec<ComponentValue>,
    },
    /// Components removed (registration indices).
    Remove { wire: u32, components: Vec<u16> },
    /// The entity is gone.
    Despawn { wire: u32 },
    /// The sender gives the entity to `to`, which announces itself with a spawn of the same
    /// net id.
    HandOver { wire: u32, to: PeerId },
}

impl UpdateOp {
    /// About how many bytes the operation takes encoded; for splitting big ticks.
    pub(crate) fn size_hint(&self) -> usize {
        let values = |components: &[ComponentValue]| {
            components
                .iter()
                .map(|value| value.bytes.len() + 6)
                .sum::<usize>()
        };
        match self {
            UpdateOp::Spawn(spawn) => 24 + values(&spawn.components),
            UpdateOp::Insert { components, .. } => 12 + values(components),
            UpdateOp::Remove { components, .. } => 8 + 3 * components.len(),
            UpdateOp::Despawn { .. } => 6,
            UpdateOp::HandOver { .. } => 22,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            UpdateOp::Spawn(spawn) => {
                out.push(OP_SPAWN);
                put_varint(out, u64::from(spawn.wire));
                out.extend_from_slice(&spawn.net_id.to_le_bytes());
                out.push(spawn.flags.to_byte());
                put_components(out, &spawn.components);
            }
            UpdateOp::Insert { wire, components } => {
                out.push(OP_INSERT);
                put_varint(out, u64::from(*wire));
                put_components(out, components);
            }
            UpdateOp::Remove { wire, components } => {
                out.push(OP_REMOVE);
                put_varint(out, u64::from(*wire));
                put_varint(out, components.len() as u64);
                for component in components {
                    put_varint(out, u64::from(*component));
                }
            }
            UpdateOp::Despawn { wire } => {
                out.push(OP_DESPAWN);
                put_varint(out, u64::from(*wire));
            }
            UpdateOp::HandOver { wire, to } => {
                out.push(OP_HAND_OVER);
                put_varint(out, u64::from(*wire));
                out.extend_from_slice(&to.0.to_le_bytes());
            }
        }
    }
}

/// Everything structural an owner did in one network tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpdateMessage {
    /// The owner's network tick.
    pub(crate) tick: u32,
    /// Where it stands in a snapshot, if it is part of one.
    pub(crate) snapshot: SnapshotMarks,
    /// In the order they happened.
    pub(crate) ops: Vec<UpdateOp>,
}

/// A snapshot is every entity an owner shows a peer, spawned, in one or more update messages:
/// the first says it begins, the last that it ends. A receiver that still holds entities of
/// that owner the snapshot did not list (it despawned them while the two were apart) drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SnapshotMarks {
    pub(crate) begins: bool,
    pub(crate) ends: bool,
}

impl UpdateMessage {
    /// Appends the encoded message to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let marks = u64::from(self.snapshot.begins) | (u64::from(self.snapshot.ends) << 1);
        put_varint(out, (u64::from(self.tick) << 2) | marks);
        for op in &self.ops {
            op.encode(out);
        }
    }
}

fn put_components(out: &mut Vec<u8>, components: &[ComponentValue]) {
    put_varint(out, components.len() as u64);
    for value in components {
        put_varint(out, u64::from(value.component));
        put_varint(out, value.bytes.len() as u64);
        out.extend_from_slice(&value.bytes);
    }
}

fn read_u32(reader: &mut Reader<'_>, what: &'static str) -> Result<u32, WireError> {
    Ok(reader.varint_max(u64::from(u32::MAX), what)? as u32)
}

fn read_component(reader: &mut Reader<'_>) -> Result<u16, WireError> {
    Ok(reader.varint_max(u64::from(u16::MAX), "component index")? as u16)
}

fn read_components(
    reader: &mut Reader<'_>,
    message: &Bytes,
) -> Result<Vec<ComponentValue>, WireError> {
    let count = reader.varint_max(MAX_COUNT, "component count")?;
    // Every entry takes at least two bytes: the count cannot claim more than the input holds.
    let mut components = Vec::with_capacity((count as usize).min(reader.remaining() / 2));
    for _ in 0..count {
        let component = read_component(reader)?;
        let len = reader.varint_max(reader.remaining() as u64, "component length")?;
        let bytes = message.slice_ref(reader.bytes(len as usize)?);
        components.push(ComponentValue { component, bytes });
    }
    Ok(components)
}

/// Reads an update message; component values are slices of `bytes`, not copies. Any
/// malformation fails the whole message: updates are applied all or nothing.
pub(crate) fn decode_update(bytes: &Bytes) -> Result<UpdateMessage, WireError> {
    let mut reader = Reader::new(bytes);
    let head = reader.varint_max((u64::from(u32::MAX) << 2) | 3, "tick")?;
    let snapshot = SnapshotMarks {
        begins: head & 1 != 0,
        ends: head & 2 != 0,
    };
    let tick = (head >> 2) as u32;
    let mut ops = Vec::new();
    while !reader.is_empty() {
        let op = match reader.u8()? {
            OP_SPAWN => {
                let wire = read_u32(&mut reader, "entity")?;
                let net_id = reader.u64()?;
                let flags = SpawnFlags::from_byte(reader.u8()?)?;
                UpdateOp::Spawn(Spawn {
                    wire,
                    net_id,
                    flags,
                    components: read_components(&mut reader, bytes)?,
                })
            }
            OP_INSERT => UpdateOp::Insert {
                wire: read_u32(&mut reader, "entity")?,
                components: read_components(&mut reader, bytes)?,
            },
            OP_REMOVE => {
                let wire = read_u32(&mut reader, "entity")?;
                let count = reader.varint_max(MAX_COUNT, "component count")?;
                let mut components = Vec::with_capacity((count as usize).min(reader.remaining()));
                for _ in 0..count {
                    components.push(read_component(&mut reader)?);
                }
                UpdateOp::Remove { wire, components }
            }
            OP_DESPAWN => UpdateOp::Despawn {
                wire: read_u32(&mut reader, "entity")?,
            },
            OP_HAND_OVER => {
                let wire = read_u32(&mut reader, "entity")?;
                let to = PeerId(u128::from_le_bytes(reader.array()?));
                UpdateOp::HandOver { wire, to }
            }
            _ => return Err(WireError::OutOfRange("update operation")),
        };
        ops.push(op);
    }
    Ok(UpdateMessage {
        tick,
        snapshot,
        ops,
    })
}

/// The fixed part of a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MutateHeader {
    /// The owner's network tick the values are from.
    pub(crate) tick: u32,
    /// The owner's update tick that must be applied before these values.
    pub(crate) needs: u32,
    /// The owner's clock when the values were collected, in µs.
    pub(crate) time: u64,
}

impl MutateHeader {
    /// At most two varints of five bytes and one of ten.
    pub(crate) const MAX_LEN: usize = 20;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        put_varint(out, u64::from(self.needs));
        put_varint(out, self.time);
    }

    /// Reads a mutation message's header; the groups follow in `reader`.
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            tick: read_u32(reader, "tick")?,
            needs: read_u32(reader, "update tick")?,
            time: reader.varint_max(u64::MAX, "send time")?,
        })
    }
}

/// The start of a group of values of one component in a mutation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupHeader {
    pub(crate) component: u16,
    /// How many entries follow.
    pub(crate) count: u32,
    /// For a group of differences: the age (in ticks before the message's) of the baseline
    /// that its entries with no age of their own are differences from.
    pub(crate) base: Option<u32>,
}

impl GroupHeader {
    /// At most a three-byte component index and two five-byte varints.
    pub(crate) const MAX_LEN: usize = 13;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let differences = u64::from(self.base.is_some());
        put_varint(out, (u64::from(self.component) << 1) | differences);
        put_varint(out, u64::from(self.count));
        if let Some(base) = self.base {
            put_varint(out, u64::from(base));
        }
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        let first = reader.varint_max((u64::from(u16::MAX) << 1) | 1, "component index")?;
        let count = read_u32(reader, "group size")?;
        let base = match first & 1 {
            0 => None,
            _ => Some(read_u32(reader, "baseline age")?),
        };
        Ok(Self {
            component: (first >> 1) as u16,
            count,
            base,
        })
    }
}

/// Values a receiver could not read in the owner's mutation message of `tick`: it lacked
/// their baselines, and wants them whole.
///
/// ```text
/// refused  (unreliable, kind 8) := tick:varint n:varint (component:varint wire:varint)^n
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Refused {
    pub(crate) tick: u32,
    pub(crate) values: Vec<(u16, u32)>,
}

impl Refused {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.tick));
        put_varint(out, self.values.len() as u64);
        for (component, wire) in &self.values {
            put_varint(out, u64::from(*component));
            put_varint(out, u64::from(*wire));
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut reader = Reader::new(bytes);
        let tick = read_u32(&mut reader, "tick")?;
        let count = reader.varint_max(MAX_COUNT, "value count")?;
        // Each value takes at least two bytes: the count cannot claim more than the input holds.
        let mut values = Vec::with_capacity((count as usize).min(reader.remaining() / 2));
        for _ in 0..count {
            values.push((read_component(&mut reader)?, read_wire(&mut reader)?));
        }
        if !reader.is_empty() {
            return Err(WireError::OutOfRange("bytes after the values"));
        }
        Ok(Self { tick, values })
    }
}

/// How an entry of a group of differences holds its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryForm {
    /// The difference from the value of the group's baseline age.
    FromGroupBase,
    /// The difference from the value this many ticks before the message's.
    FromAge(u32),
    /// The whole value, this many bytes long.
    Whole(u32),
}

/// The start of an entry of a group of differences: its entity's number as the gap from the
/// previous entry's, and the form of its value.
pub(crate) fn put_delta_entry(out: &mut Vec<u8>, gap: u32, form: EntryForm) {
    let (mode, extra) = match form {
        EntryForm::FromGroupBase => (0, None),
        EntryForm::FromAge(age) => (1, Some(age)),
        EntryForm::Whole(len) => (2, Some(len)),
    };
    put_varint(out, (u64::from(gap) << 2) | mode);
    if let Some(extra) = extra {
        put_varint(out, u64::from(extra));
    }
}

/// Bytes [`put_delta_entry`] writes.
pub(crate) fn delta_entry_len(gap: u32, form: EntryForm) -> usize {
    let extra = match form {
        EntryForm::FromGroupBase => 0,
        EntryForm::FromAge(value) | EntryForm::Whole(value) => varint_len(u64::from(value)),
    };
    varint_len(u64::from(gap) << 2) + extra
}

/// Reads the start of an entry of a group of differences: the gap and the value's form.
pub(crate) fn read_delta_entry(reader: &mut Reader<'_>) -> Result<(u32, EntryForm), WireError> {
    let head = reader.varint_max((u64::from(u32::MAX) << 2) | 3, "entity")?;
    let gap = (head >> 2) as u32;
    let form = match head & 3 {
        0 => EntryForm::FromGroupBase,
        1 => EntryForm::FromAge(read_u32(reader, "baseline age")?),
        2 => EntryForm::Whole(read_u32(reader, "value length")?),
        _ => return Err(WireError::OutOfRange("value form")),
    };
    Ok((gap, form))
}

/// Appends one entry of a group: the entity's number, then its value's bytes.
pub(crate) fn put_entry(out: &mut Vec<u8>, wire: u32, value: &[u8]) {
    put_varint(out, u64::from(wire));
    out.extend_from_slice(value);
}

/// Bytes an entry takes in a group.
pub(crate) fn entry_len(wire: u32, value: &[u8]) -> usize {
    varint_len(u64::from(wire)) + value.len()
}

/// Reads an entity number inside a group.
pub(crate) fn read_wire(reader: &mut Reader<'_>) -> Result<u32, WireError> {
    read_u32(reader, "entity")
}

#[cfg(test)]
mod tests;
