//! Typed messages between peers: any serde type, on the channel chosen at registration.

mod mapped;
mod tracked;

use std::any::type_name;
use std::marker::PhantomData;

use bevy::ecs::entity::MapEntities;
use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::Channel;
use crate::endpoint::{KIND_TRACKED, Received};
use crate::error::{InputError, SendError};
use crate::net::{ConnectedPeers, KindQueues, NetEndpoint, PeersyncSystems, reject_input};
use crate::peer::PeerId;
use crate::protocol::ProtocolRegistry;
use crate::wire::{decode_serde, encode_serde};

pub(crate) use self::mapped::EntityTranslation;
use self::mapped::{GROWTH_PER_ENTITY, MappedHooks, receive_mapped, translate_outgoing};
use self::tracked::Deliveries;
pub(crate) use self::tracked::build as build_delivery_reports;
pub use self::tracked::{DeliveryOutcome, DeliveryReport, MessageTicket};

/// Types that can travel as peer messages.
pub trait PeerMessage: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> PeerMessage for T {}

/// A message received from a peer. Read them with `MessageReader<FromPeer<M>>`.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct FromPeer<M> {
    /// Who sent it.
    pub peer: PeerId,
    /// The message.
    pub message: M,
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connected peer.
    All,
    /// Every connected peer but one.
    AllExcept(PeerId),
    /// One peer.
    Peer(PeerId),
    /// Some peers.
    Peers(Vec<PeerId>),
    /// Whoever is host when the frame's messages go out (at the end of `PostUpdate`): this
    /// peer itself when it is the host (the message then arrives here on the next frame, as
    /// [`FromPeer`] with this peer's id), so a game needs no separate path for the host. A
    /// message already sent to a host that then dies may be lost with it: send it with
    /// [`PeerMessageWriter::send_tracked`] to hear so (a [`DeliveryReport`] with
    /// `PeerLeft`), and send it again, to the new host.
    Host,
}

impl From<PeerId> for Target {
    fn from(peer: PeerId) -> Self {
        Target::Peer(peer)
    }
}

impl From<Vec<PeerId>> for Target {
    fn from(peers: Vec<PeerId>) -> Self {
        Target::Peers(peers)
    }
}

impl From<&[PeerId]> for Target {
    fn from(peers: &[PeerId]) -> Self {
        Target::Peers(peers.to_vec())
    }
}

/// Encoded messages of type `M` waiting for [`PeersyncSystems::Send`].
#[derive(Resource)]
pub(crate) struct PeerOutbox<M> {
    kind: u16,
    channel: Channel,
    max_size: usize,
    pending: Vec<(PeerId, Outgoing)>,
    /// For [`Target::Host`]: resolved when sent.
    to_host: Vec<Outgoing>,
    /// Tracked messages of this type sent so far (tickets count them, under the kind).
    tracked: u64,
    /// For a type with `Entity` fields: how to reach them (translated when sent).
    mapped: Option<MappedHooks<M>>,
    _message: PhantomData<fn() -> M>,
}

/// One encoded message waiting to go out.
#[derive(Debug, Clone)]
struct Outgoing {
    body: Bytes,
    /// Set for [`PeerMessageWriter::send_tracked`].
    ticket: Option<u64>,
}

/// Sends messages of type `M` to peers.
///
/// The message is encoded and checked at once, so an error (too large for its channel, unknown
/// peer) comes back to the caller; it goes out at the end of the frame. Messages of one type to
/// one peer arrive in the order sent on the reliable channel.
#[derive(SystemParam)]
pub struct PeerMessageWriter<'w, M: PeerMessage> {
    outbox: ResMut<'w, PeerOutbox<M>>,
    peers: Res<'w, ConnectedPeers>,
}

impl<M: PeerMessage> PeerMessageWriter<'_, M> {
    /// Sends `message` to `target`. Nothing is sent if the message is too large or a named peer
    /// is not connected.
    pub fn send(&mut self, target: impl Into<Target>, message: &M) -> Result<(), SendError> {
        self.queue(target.into(), message, None)
    }

    /// Sends `message` to `target`, and reports to this peer, once per recipient, whether it
    /// was read: a [`DeliveryReport`] with this ticket, `Delivered` when the recipient's app has
    /// decoded it, `PeerLeft` when the recipient left first (for [`Target::Host`], that is the
    /// moment to send it again, to the new host). Reliable messages only: a lost unreliable
    /// message would never be answered.
    pub fn send_tracked(
        &mut self,
        target: impl Into<Target>,
        message: &M,
    ) -> Result<MessageTicket, SendError> {
        if self.outbox.channel != Channel::Reliable {
            return Err(SendError::NotReliable);
        }
        self.outbox.tracked += 1;
        // Unique across types: the kind above, a count below.
        let ticket = (u64::from(self.outbox.kind) << 48) | (self.outbox.tracked & ((1 << 48) - 1));
        self.queue(target.into(), message, Some(ticket))?;
        Ok(MessageTicket(ticket))
    }

    fn queue(&mut self, target: Target, message: &M, ticket: Option<u64>) -> Result<(), SendError> {
        let body = encode_serde(message).map_err(SendError::Encode)?;
        // Entities become net ids when the message goes out, which may take more bytes: the
        // check counts the most they can take, so it can answer now.
        let growth = match self.outbox.mapped {
            Some(hooks) => {
                let mut copy = decode_serde::<M>(&body).map_err(SendError::Encode)?;
                hooks.count(&mut copy) * GROWTH_PER_ENTITY
            }
            None => 0,
        };
        let size = body.len() + growth;
        if size > self.outbox.max_size {
            return Err(SendError::TooLarge {
                size,
                max: self.outbox.max_size,
                channel: self.outbox.channel,
            });
        }
        let out = Outgoing {
            body: Bytes::from(body),
            ticket,
        };
        let pending = &mut self.outbox.pending;
        match target {
            Target::All => pending.extend(self.peers.ids().map(|peer| (peer, out.clone()))),
            Target::AllExcept(except) => pending.extend(
                self.peers
                    .ids()
                    .filter(|peer| *peer != except)
                    .map(|peer| (peer, out.clone())),
            ),
            Target::Peer(peer) => {
                if !self.peers.contains(peer) {
                    return Err(SendError::UnknownPeer(peer));
                }
                pending.push((peer, out));
            }
            Target::Peers(peers) => {
                if let Some(missing) = peers.iter().find(|peer| !self.peers.contains(**peer)) {
                    return Err(SendError::UnknownPeer(*missing));
                }
                pending.extend(peers.into_iter().map(|peer| (peer, out.clone())));
            }
            Target::Host => {
                if self.peers.host().is_none() {
                    return Err(SendError::NotInRoom);
                }
                self.outbox.to_host.push(out);
            }
        }
        Ok(())
    }

    /// Sends `message` to every connected peer.
    pub fn broadcast(&mut self, message: &M) -> Result<(), SendError> {
        self.send(Target::All, message)
    }
}

/// Registers peer message types.
pub trait PeerMessageAppExt {
    /// Registers `M` as a message on `channel`: senders use [`PeerMessageWriter<M>`], receivers
    /// read `MessageReader<FromPeer<M>>`. Every peer must register the same messages in the
    /// same order (checked when peers connect).
    fn add_peer_message<M: PeerMessage>(&mut self, channel: Channel) -> &mut Self;

    /// Registers `M`, a message with `Entity` fields (it implements [`MapEntities`]), so that
    /// they arrive as the receiver's entities: an entity the sender replicates arrives as the
    /// receiver's copy of it; one whose spawn has not arrived yet as an empty entity that the
    /// spawn fills (as references in replicated components do); one the sender does not
    /// replicate as `Entity::PLACEHOLDER`.
    ///
    /// ```
    /// use bevy::ecs::entity::MapEntities;
    /// use bevy::prelude::*;
    /// use bevy_peersync::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// /// "I picked up this coin."
    /// #[derive(Serialize, Deserialize, MapEntities)]
    /// struct Pickup {
    ///     #[entities]
    ///     coin: Entity,
    /// }
    ///
    /// App::new()
    ///     .add_plugins((MinimalPlugins, PeersyncPlugin::default()))
    ///     .add_mapped_peer_message::<Pickup>(Channel::Reliable);
    /// ```
    fn add_mapped_peer_message<M: PeerMessage + MapEntities>(
        &mut self,
        channel: Channel,
    ) -> &mut Self;
}

impl PeerMessageAppExt for App {
    fn add_peer_message<M: PeerMessage>(&mut self, channel: Channel) -> &mut Self {
        register::<M>(self, channel, None)
            .add_systems(
                PreUpdate,
                receive_messages::<M>.in_set(PeersyncSystems::Receive),
            )
            .add_systems(PostUpdate, send_messages::<M>.in_set(PeersyncSystems::Send))
    }

    fn add_mapped_peer_message<M: PeerMessage + MapEntities>(
        &mut self,
        channel: Channel,
    ) -> &mut Self {
        register::<M>(self, channel, Some(MappedHooks::new()))
            .add_systems(
                PreUpdate,
                receive_mapped::<M>.in_set(PeersyncSystems::Receive),
            )
            .add_systems(
                PostUpdate,
                (translate_outgoing::<M>, send_messages::<M>)
                    .chain()
                    .in_set(PeersyncSystems::Send),
            )
    }
}

/// What both registrations share: the kind, the protocol entry, the outbox, the Bevy message.
fn register<M: PeerMessage>(
    app: &mut App,
    channel: Channel,
    mapped: Option<MappedHooks<M>>,
) -> &mut App {
    {
        let world = app.world_mut();
        assert!(
            world.contains_resource::<KindQueues>(),
            "add PeersyncPlugin before registering peer messages"
        );
        assert!(
            !world.contains_resource::<PeerOutbox<M>>(),
            "peer message {} registered twice",
            type_name::<M>()
        );
        let kind = world.resource_mut::<KindQueues>().register_app_kind();
        world.resource_mut::<ProtocolRegistry>().push(format!(
            "message:{}:{channel:?}{}",
            type_name::<M>(),
            if mapped.is_some() { ":mapped" } else { "" }
        ));
        let config = &world.resource::<NetEndpoint>().0.config;
        let max_size = match channel {
            Channel::Reliable => config.max_message_size,
            Channel::Unreliable => config.max_unreliable_message(),
        };
        world.insert_resource(PeerOutbox::<M> {
            kind,
            channel,
            max_size,
            pending: Vec::new(),
            to_host: Vec::new(),
            tracked: 0,
            mapped,
            _message: PhantomData,
        });
    }
    app.add_message::<FromPeer<M>>()
}

fn receive_messages<M: PeerMessage>(
    outbox: Res<PeerOutbox<M>>,
    peers: Res<ConnectedPeers>,
    mut queues: ResMut<KindQueues>,
    mut deliveries: ResMut<Deliveries>,
    mut writer: MessageWriter<FromPeer<M>>,
    mut commands: Commands,
) {
    for received in queues.take(outbox.kind) {
        match decode_serde::<M>(&received.body) {
            Ok(message) => {
                if let Some(ticket) = received.ticket {
                    deliveries.read(received.peer, ticket, peers.local_id());
                }
                writer.write(FromPeer {
                    peer: received.peer,
                    message,
                });
            }
            Err(error) => {
                let peer = received.peer;
                let error = InputError::Decode {
                    type_name: type_name::<M>(),
                    error,
                };
                commands.queue(move |world: &mut World| reject_input(world, peer, error));
            }
        }
    }
}

/// A tracked message travels under its own kind, with the app kind and the ticket in front.
fn wrap_tracked(kind: u16, ticket: u64, body: &Bytes) -> Bytes {
    let mut wrapped = Vec::with_capacity(body.len() + 12);
    crate::wire::put_varint(&mut wrapped, u64::from(kind));
    crate::wire::put_varint(&mut wrapped, ticket);
    wrapped.extend_from_slice(body);
    Bytes::from(wrapped)
}

fn send_messages<M: PeerMessage>(
    mut outbox: ResMut<PeerOutbox<M>>,
    mut endpoint: ResMut<NetEndpoint>,
    peers: Res<ConnectedPeers>,
    mut queues: ResMut<KindQueues>,
    mut deliveries: ResMut<Deliveries>,
) {
    let (kind, channel) = (outbox.kind, outbox.channel);
    let mut send = |endpoint: &mut NetEndpoint, peer: PeerId, out: Outgoing| {
        let sent = match out.ticket {
            None => endpoint.0.send(peer, channel, kind, out.body, None),
            Some(ticket) => {
                let wrapped = wrap_tracked(kind, ticket, &out.body);
                let sent = endpoint.0.send(peer, channel, KIND_TRACKED, wrapped, None);
                match sent {
                    Ok(()) => deliveries.sent(peer, ticket, type_name::<M>()),
                    Err(_) => deliveries.not_sent(peer, ticket, type_name::<M>()),
                }
                sent
            }
        };
        // Fails only if the peer left since the message was queued: nobody to send it to (a
        // tracked message is reported so).
        let _ = sent;
    };
    for (peer, out) in std::mem::take(&mut outbox.pending) {
        send(&mut endpoint, peer, out);
    }
    if outbox.to_host.is_empty() {
        return;
    }
    let to_host = std::mem::take(&mut outbox.to_host);
    match (peers.host(), peers.local_id()) {
        (Some(host), Some(local)) if host == local => {
            for out in to_host {
                if let Some(ticket) = out.ticket {
                    deliveries.sent(local, ticket, type_name::<M>());
                }
                let message = Received {
                    peer: local,
                    channel,
                    kind,
                    body: out.body,
                    ticket: out.ticket,
                };
                // The kind is registered (this outbox exists), so the queue takes it.
                let _ = queues.push(message);
            }
        }
        (Some(host), _) => {
            for out in to_host {
                send(&mut endpoint, host, out);
            }
        }
        (None, _) => tracing::warn!(
            "{} message(s) of type {} for the host dropped: this peer left the room",
            to_host.len(),
            type_name::<M>()
        ),
    }
}
