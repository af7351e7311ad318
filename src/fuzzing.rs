//! What the fuzz targets in `fuzz/` run, kept in the library so that it can reach the session
//! layer and so that `cargo test` runs it too (on the seeds and on random input). Not an API:
//! hidden from the docs and free to change.
//!
//! [`receive`] plays a hostile peer against a real receiving app: it completes the handshake
//! honestly (so that its input reaches the replication and message decoders rather than being
//! refused at the door), then sends whatever the fuzz input says — well-framed messages of any
//! kind and body, and raw packets that go straight to the session decoder — with the clock and
//! the receiver's frames interleaved as the input says.

use std::time::Duration;

use bevy::ecs::entity::{EntityMapper, MapEntities};
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, Received};
use crate::replication::codec::ComponentCodec;
use crate::replication::wire::{
    ComponentValue, EntryForm, GroupHeader, MutateHeader, SnapshotMarks, Spawn, SpawnFlags,
    UpdateMessage, UpdateOp, decode_update, put_delta_entry, put_entry,
};
use crate::replication::{Replicated, ReplicationAppExt, ReplicationConfig, TransformCodec};
use crate::transport::{LinkEvent, MemoryTransport, Packet, Transport, TransportIo};
use crate::wire::{Reader, encode_serde};
use crate::{
    Channel, FromPeer, MemoryNetwork, PeerId, PeerInputRejected, PeerMessageAppExt, PeerSocket,
    PeersyncPlugin, SessionConfig,
};

/// Message kind of replication's update messages (reliable): what a forged spawn is sent as.
pub const KIND_UPDATE: u16 = crate::replication::wire::KIND_UPDATE;
/// Message kind of replication's mutation messages (unreliable).
pub const KIND_MUTATE: u16 = crate::replication::wire::KIND_MUTATE;

/// An update message of `tick` holding one spawn: entity `wire` with room-wide id `net_id`
/// and these components (registration index, encoded value). For tests of what peers do with
/// claims they should not accept.
pub fn forged_spawn(tick: u32, wire: u32, net_id: u64, components: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    UpdateMessage {
        tick,
        snapshot: SnapshotMarks::default(),
        ops: vec![UpdateOp::Spawn(Spawn {
            wire,
            net_id,
            flags: SpawnFlags::default(),
            components: components
                .iter()
                .map(|(component, bytes)| ComponentValue {
                    component: *component,
                    bytes: Bytes::copy_from_slice(bytes),
                })
                .collect(),
        })],
    }
    .encode(&mut out);
    out
}

/// An update message of `tick` handing entity `wire` to `to`. For tests of hand-overs a peer
/// should not accept.
pub fn forged_hand_over(tick: u32, wire: u32, to: PeerId) -> Vec<u8> {
    let mut out = Vec::new();
    UpdateMessage {
        tick,
        snapshot: SnapshotMarks::default(),
        ops: vec![UpdateOp::HandOver { wire, to }],
    }
    .encode(&mut out);
    out
}

/// A replicated component that points at another entity: exercises entity mapping.
#[derive(Component, Serialize, Deserialize, Clone, Debug)]
pub struct Points(pub Entity);

impl MapEntities for Points {
    fn map_entities<M: EntityMapper>(&mut self, mapper: &mut M) {
        self.0 = mapper.get_mapped(self.0);
    }
}

/// A replicated component with a variable-length serde encoding.
#[derive(Component, Serialize, Deserialize, Clone, Debug)]
pub struct Label(pub String);

/// A typed message the receiver registers.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Chat(pub Vec<u8>);

/// Message kind of [`Chat`] (the first kind after the library's own).
const KIND_CHAT: u16 = 16;

/// Registrations shared by the receiver and [`seeds`]: components 0, 1, 2 are `Transform`,
/// `Points`, `Label`.
fn register(app: &mut App) {
    app.replicate_codec::<Transform>(TransformCodec::default())
        .replicate_mapped::<Points>()
        .replicate::<Label>()
        .add_peer_message::<Chat>(Channel::Reliable)
        .insert_resource(ReplicationConfig {
            tick_rate: 0.0,
            ..default()
        });
}

/// Reads the fuzz input front to back; running out reads as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn channel(&mut self) -> Channel {
        if self.byte() & 1 == 0 {
            Channel::Reliable
        } else {
            Channel::Unreliable
        }
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }
}

const FRAME: Duration = Duration::from_millis(16);

struct Attacker {
    transport: MemoryTransport,
    endpoint: Endpoint,
    io: TransportIo,
    received: Vec<Received>,
}

impl Attacker {
    fn pump(&mut self, now: Duration) {
        self.transport.receive(now, &mut self.io);
        for event in self.io.links.drain(..) {
            self.endpoint.handle_link(now, event);
        }
        for packet in std::mem::take(&mut self.io.incoming) {
            self.endpoint
                .handle_packet(now, &packet, &mut self.received);
        }
        self.received.clear();
        self.endpoint.drain_events().for_each(drop);
        let outgoing = &mut self.io.outgoing;
        self.endpoint
            .flush(now, &mut |packet| outgoing.push(packet));
        self.transport.send(&mut self.io);
    }
}

/// What the receiver made of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Resource)]
pub struct Outcome {
    /// Replicated entities it holds at the end.
    pub replicated: usize,
    /// Most replicated entities it held after any frame.
    pub most_replicated: usize,
    /// [`Chat`] messages the game received.
    pub chats: usize,
    /// [`PeerInputRejected`](crate::PeerInputRejected) events.
    pub rejected: usize,
}

fn observe(
    mut outcome: ResMut<Outcome>,
    mut chats: MessageReader<FromPeer<Chat>>,
    replicated: Query<(), With<Replicated>>,
) {
    outcome.chats += chats.read().count();
    outcome.replicated = replicated.iter().count();
    outcome.most_replicated = outcome.most_replicated.max(outcome.replicated);
}

/// Runs one fuzz input against a fresh receiver. Panics only on a bug: an input that makes it
/// panic is a finding.
pub fn receive(data: &[u8]) -> Outcome {
    let network = MemoryNetwork::new(0);
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        PeersyncPlugin::with_socket(PeerSocket::new(network.join())),
    ))
    .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME));
    register(&mut app);
    app.init_resource::<Outcome>()
        .add_systems(Update, observe)
        .add_observer(|_: On<PeerInputRejected>, mut outcome: ResMut<Outcome>| {
            outcome.rejected += 1;
        });
    app.finish();
    app.cleanup();
    let hash = app
        .world()
        .resource::<crate::protocol::ProtocolRegistry>()
        .hash();

    let transport = network.join();
    let me = transport.id();
    let victim = network
        .peers()
        .into_iter()
        .find(|peer| *peer != me)
        .expect("two peers joined");
    let mut endpoint = Endpoint::new(
        SessionConfig::default(),
        hash,
        crate::identity::PlayerIdentity::from_secret([0xa5; 32]),
    );
    endpoint.set_local(Some(me));
    let mut attacker = Attacker {
        transport,
        endpoint,
        io: TransportIo::default(),
        received: Vec::new(),
    };
    let mut now = Duration::ZERO;
    let step = |app: &mut App, attacker: &mut Attacker, now: &mut Duration| {
        attacker.pump(*now);
        app.update();
        network.advance(FRAME);
        *now += FRAME;
    };
    // The handshake, done honestly.
    for _ in 0..4 {
        step(&mut app, &mut attacker, &mut now);
    }

    let mut input = Input(data);
    while !input.0.is_empty() {
        match input.byte() % 8 {
            // A well-framed message of a kind the receiver knows, or of any kind.
            op @ 0..=3 => {
                let kind = match op {
                    0 => KIND_UPDATE,
                    1 => KIND_MUTATE,
                    2 => KIND_CHAT,
                    _ => input.u16() & 0x3fff,
                };
                let channel = input.channel();
                let len = usize::from(input.u16());
                let body = Bytes::copy_from_slice(input.bytes(len));
                // Refusals (too big for the channel, empty) are the sender's business.
                let _ = attacker.endpoint.send(victim, channel, kind, body, None);
            }
            // A raw packet, straight to the receiver's session decoder.
            4 => {
                let channel = input.channel();
                let len = usize::from(input.u16());
                let bytes = Bytes::copy_from_slice(input.bytes(len));
                // Empty packets never arrive: WebRTC stacks drop them.
                if !bytes.is_empty() {
                    attacker.io.outgoing.push(Packet {
                        peer: victim,
                        channel,
                        bytes,
                    });
                }
            }
            // Time passes: whole frames, or a jump (timeouts, heartbeats).
            5 => {
                for _ in 0..input.byte() % 8 + 1 {
                    step(&mut app, &mut attacker, &mut now);
                }
            }
            6 => {
                let jump = Duration::from_millis(u64::from(input.u16()) * 4);
                network.advance(jump);
                now += jump;
                step(&mut app, &mut attacker, &mut now);
            }
            // The link drops (and may come back with the next op's traffic refused).
            _ => {
                if input.byte() == 0xff {
                    attacker.endpoint.handle_link(now, LinkEvent::Down(victim));
                }
            }
        }
    }
    for _ in 0..4 {
        step(&mut app, &mut attacker, &mut now);
    }
    let outcome = *app.world().resource::<Outcome>();
    // Whatever it was sent, the receiver holds a bounded world: a spawn takes at least 4 bytes.
    assert!(
        outcome.most_replicated <= data.len() / 4,
        "{outcome:?} from {} bytes of input",
        data.len()
    );
    outcome
}

/// The sans-io decoders alone, fast: an update message (whatever decodes re-encodes to the same
/// message), a mutation header, and transform values.
pub fn decode(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(message) = decode_update(&bytes) {
        let mut again = Vec::new();
        message.encode(&mut again);
        assert_eq!(
            decode_update(&Bytes::from(again)).as_ref(),
            Ok(&message),
            "a decoded update re-encodes to itself"
        );
    }
    let mut reader = Reader::new(data);
    if MutateHeader::decode(&mut reader).is_ok() {
        let _ = GroupHeader::decode(&mut reader);
    }
    let codec = TransformCodec::default();
    let mut rest = data;
    while !rest.is_empty() {
        let before = rest.len();
        if ComponentCodec::<Transform>::decode(&codec, &mut rest).is_err() {
            break;
        }
        assert!(rest.len() < before, "a decoded value consumed input");
    }
}

/// Valid messages: a spawn with every component, a mutation of it, its despawn, a chat.
fn messages() -> [Vec<u8>; 4] {
    let transform = Transform::from_xyz(1.0, 2.0, 3.0);
    let mut value = Vec::new();
    TransformCodec::default().encode(&transform, &mut value);
    let points = bincode_of(&Points(
        Entity::from_raw_u32(1).expect("not the placeholder"),
    ));
    let label = bincode_of(&Label("ball".to_owned()));

    let mut spawn = Vec::new();
    UpdateMessage {
        tick: 1,
        snapshot: SnapshotMarks::default(),
        ops: vec![UpdateOp::Spawn(Spawn {
            wire: 1,
            net_id: 7,
            flags: SpawnFlags {
                host_owned: true,
                hand_to_host: false,
            },
            components: [(0, value.clone()), (1, points), (2, label)]
                .into_iter()
                .map(|(component, bytes)| ComponentValue {
                    component,
                    bytes: Bytes::from(bytes),
                })
                .collect(),
        })],
    }
    .encode(&mut spawn);
    let mut mutate = Vec::new();
    MutateHeader {
        tick: 2,
        needs: 1,
        time: 0,
    }
    .encode(&mut mutate);
    GroupHeader {
        component: 0,
        count: 1,
        base: None,
    }
    .encode(&mut mutate);
    put_entry(&mut mutate, 1, &value);
    // The same value in a group of differences: whole, then as a difference from itself.
    GroupHeader {
        component: 0,
        count: 2,
        base: Some(1),
    }
    .encode(&mut mutate);
    put_delta_entry(&mut mutate, 1, EntryForm::Whole(value.len() as u32));
    mutate.extend_from_slice(&value);
    put_delta_entry(&mut mutate, 0, EntryForm::FromGroupBase);
    mutate.push(0);
    let mut despawn = Vec::new();
    UpdateMessage {
        tick: 3,
        snapshot: SnapshotMarks::default(),
        ops: vec![UpdateOp::Despawn { wire: 1 }],
    }
    .encode(&mut despawn);
    let chat = bincode_of(&Chat(b"hello".to_vec()));
    [spawn, mutate, despawn, chat]
}

/// Inputs for [`decode`]: the messages of [`receive_seeds`] as they are.
pub fn decode_seeds() -> Vec<Vec<u8>> {
    messages().into()
}

/// Inputs for [`receive`] that reach deep: a spawn with every component, a mutation of it, a
/// chat message, a despawn; and a broken raw packet. `fuzz/src/bin/seeds.rs` writes them into
/// the corpus.
pub fn receive_seeds() -> Vec<Vec<u8>> {
    let [spawn, mutate, despawn, chat] = messages();
    let message = |out: &mut Vec<u8>, op: u8, unreliable: bool, body: &[u8]| {
        out.push(op);
        out.push(u8::from(unreliable));
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(body);
    };
    let frames = |out: &mut Vec<u8>| out.extend_from_slice(&[5, 2]);

    let mut whole = Vec::new();
    message(&mut whole, 0, false, &spawn);
    frames(&mut whole);
    message(&mut whole, 1, true, &mutate);
    message(&mut whole, 2, false, &chat);
    frames(&mut whole);
    message(&mut whole, 0, false, &despawn);
    frames(&mut whole);

    let mut spawn_only = Vec::new();
    message(&mut spawn_only, 0, false, &spawn);
    let mut raw = vec![4, 0, 3, 0, 0x01, 0x10, 0x00];
    frames(&mut raw);
    vec![whole, spawn_only, raw]
}

fn bincode_of<T: Serialize>(value: &T) -> Vec<u8> {
    encode_serde(value).expect("the seed values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn the_seeds_reach_replication_and_messages() {
        // Seeds are only worth having if they get past the handshake and the framing.
        let [whole, spawn_only, raw] = receive_seeds().try_into().expect("three seeds");
        let outcome = receive(&whole);
        assert_eq!(
            (
                outcome.most_replicated,
                outcome.replicated,
                outcome.chats,
                outcome.rejected
            ),
            (1, 0, 1, 0),
            "the whole seed spawns an entity, chats once and despawns the entity, all accepted"
        );
        assert_eq!(
            receive(&spawn_only).replicated,
            1,
            "the spawn seed leaves one replicated entity"
        );
        assert!(
            receive(&raw).rejected > 0,
            "the raw seed is a broken packet the receiver reports"
        );
    }

    #[test]
    fn an_empty_input_is_a_quiet_connection() {
        assert_eq!(receive(&[]), Outcome::default());
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut random = SplitMix64::new(42);
        let seeds: Vec<_> = receive_seeds().into_iter().chain(decode_seeds()).collect();
        for round in 0..200 {
            let mut input = seeds[round % seeds.len()].clone();
            for _ in 0..random.next_u64() % 8 + 1 {
                let at = (random.next_u64() % input.len() as u64) as usize;
                input[at] = random.next_u64() as u8;
            }
            if round % 4 == 0 {
                input = (0..random.next_u64() % 256)
                    .map(|_| random.next_u64() as u8)
                    .collect();
            }
            receive(&input);
            decode(&input);
        }
    }
}
