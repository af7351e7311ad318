//! The peers the game can see: one entity each, and the resource that lists them.

use std::collections::BTreeMap;
use std::time::Duration;

use bevy::prelude::*;

use super::continuity::Continuity;
use crate::identity::PlayerId;
use crate::peer::PeerId;
use crate::session::LinkStats;

/// A remote peer we are connected to, on its own entity: spawned when its connection is up and
/// its protocol matches ours, despawned when it goes. Add your own components to it freely.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[require(PeerStats)]
pub struct Peer {
    /// The peer's id: its address in the room, new each time it joins.
    pub id: PeerId,
    /// The player it proved to be: the same when it rejoins (see
    /// [`PeerResumed`](crate::PeerResumed)).
    pub player: PlayerId,
}

/// Network figures for one connected peer, as the game can show them. Kept current on each
/// [`Peer`] entity.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerStats {
    /// Smoothed round-trip time, from the acknowledgements of unreliable packets; `None` until
    /// the first one. The peer acks only once per frame, and each ack says how long it held
    /// the packet: that wait is left out, so this is the network's part, which is what lag
    /// compensation and interpolation need. Time a packet waits in either side's socket until
    /// that app's next frame reads it is still in (it cannot be told from the network).
    pub rtt: Option<Duration>,
    /// How much the arrival times of the peer's packets wobble: RFC 3550's interarrival jitter,
    /// the smoothed change in transit time from one of its timestamped packets (about 20 a
    /// second) to the next, as this app sees them (so its own frame rate adds to it). Size an
    /// interpolation buffer from it; `None` until two arrived.
    pub jitter: Option<Duration>,
    /// The peer's clock minus ours, in seconds: add it to one of our times to get the peer's
    /// time at that moment, subtract it from a peer's time to get ours. Clocks are each app's
    /// `Time<Real>` elapsed time (so mostly the difference of the two start times); estimated
    /// NTP-style from timestamped acks, from the samples with the shortest round trips, so
    /// symmetric jitter averages out (an asymmetric route, slower one way, still biases it by
    /// half the difference). `None` until the first sample. A plain `f64` because it is
    /// signed and sub-millisecond: `Duration` can be neither negative nor that cheap to mix.
    pub clock_offset: Option<f64>,
    /// Share of our unreliable packets that went unacknowledged, smoothed, 0.0 to 1.0.
    pub packet_loss: f32,
    /// Bytes per second we sent to this peer over the last second (both channels).
    pub sent_bytes_per_sec: f32,
    /// Bytes per second received from this peer over the last second (both channels).
    pub received_bytes_per_sec: f32,
    /// Packets sent since the connection opened.
    pub packets_sent: u64,
    /// Packets received since the connection opened.
    pub packets_received: u64,
    /// Packets or messages from this peer that were dropped as bad input.
    pub rejected: u64,
}

impl From<LinkStats> for PeerStats {
    fn from(link: LinkStats) -> Self {
        Self {
            rtt: link.rtt,
            jitter: link.jitter,
            clock_offset: link.clock_offset,
            packet_loss: link.packet_loss,
            sent_bytes_per_sec: link.sent_bytes_per_sec,
            received_bytes_per_sec: link.received_bytes_per_sec,
            packets_sent: link.packets_sent,
            packets_received: link.packets_received,
            rejected: link.rejected,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ConnectedPeer {
    entity: Entity,
    player: PlayerId,
}

/// The connected peers and our own id, with the host among them.
#[derive(Resource, Debug, Default, Clone)]
pub struct ConnectedPeers {
    local: Option<PeerId>,
    peers: BTreeMap<PeerId, ConnectedPeer>,
    local_player: Option<PlayerId>,
    host: Option<PeerId>,
    /// The member that would be host if the host left (see `Membership::successor`).
    successor: Option<PeerId>,
    pub(crate) continuity: Continuity,
}

impl ConnectedPeers {
    /// Our id, once assigned.
    pub fn local_id(&self) -> Option<PeerId> {
        self.local
    }

    /// The player this app plays as (see [`PlayerIdentity`](crate::PlayerIdentity)).
    pub fn local_player(&self) -> Option<PlayerId> {
        self.local_player
    }

    /// The player a connected peer proved to be.
    pub fn player(&self, peer: PeerId) -> Option<PlayerId> {
        self.peers.get(&peer).map(|connected| connected.player)
    }

    /// The player `peer` proved to be, connected or suspended (it may still come back).
    pub(crate) fn player_or_suspended(&self, peer: PeerId) -> Option<PlayerId> {
        self.player(peer)
            .or_else(|| self.continuity.player_of(peer))
    }

    /// The connected peer that is `player` now, if any.
    pub fn peer_of(&self, player: PlayerId) -> Option<PeerId> {
        self.peers
            .iter()
            .find(|(_, connected)| connected.player == player)
            .map(|(peer, _)| *peer)
    }

    /// Whether `peer` lost its connection without saying goodbye and may still come back as
    /// itself: its entities are kept, marked [`Suspended`](crate::replication::Suspended), for
    /// [`SessionConfig::resume_grace`](crate::SessionConfig::resume_grace).
    pub fn is_suspended(&self, peer: PeerId) -> bool {
        self.continuity.is_suspended(peer)
    }

    /// Whether the player that was `peer` came back this frame under a new id.
    pub(crate) fn resumed_from(&self, peer: PeerId) -> bool {
        self.continuity
            .resumed
            .iter()
            .any(|(previous, _)| *previous == peer)
    }

    /// The entity of a connected peer.
    pub fn entity(&self, peer: PeerId) -> Option<Entity> {
        self.peers.get(&peer).map(|connected| connected.entity)
    }

    /// Whether `peer` is connected.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Connected remote peers, in id order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// How many remote peers are connected.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No remote peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The host: the peer that has been in the session longest (and reaches every member), as
    /// every peer agrees. A peer that joins never takes over; a new host is elected only when
    /// the host leaves, times out, or can no longer reach everyone (a partial mesh).
    ///
    /// `None` until the room has settled: a peer alone in a room waits
    /// [`SessionConfig::settle_time`](crate::SessionConfig::settle_time) for others before it
    /// hosts, and a joiner waits until it reaches the host the others follow.
    /// [`HostChanged`](crate::HostChanged) fires on every change, from `None` included. The rule in full,
    /// with what happens in a partial mesh and when two sessions meet, is in ARCHITECTURE.md
    /// ("Host election").
    pub fn host(&self) -> Option<PeerId> {
        self.host
    }

    /// Whether this peer knows the host. A game that spawns its world entities
    /// ([`HostOwned`](crate::replication::HostOwned)) once this is true and
    /// [`is_host`](Self::is_host) spawns them once per room, not once per peer that started.
    pub fn is_settled(&self) -> bool {
        self.host.is_some()
    }

    /// Whether we are the host.
    pub fn is_host(&self) -> bool {
        self.local.is_some() && self.host() == self.local
    }

    pub(crate) fn set_host(&mut self, host: Option<PeerId>) {
        self.host = host;
    }

    /// The member next in line to be host, this peer included: the most senior member other
    /// than the host, whom the others elect when the host leaves a full mesh.
    pub(crate) fn successor(&self) -> Option<PeerId> {
        self.successor
    }

    pub(crate) fn set_successor(&mut self, successor: Option<PeerId>) {
        self.successor = successor;
    }

    pub(crate) fn set_local(&mut self, local: Option<PeerId>) {
        self.local = local;
    }

    pub(crate) fn set_local_player(&mut self, player: PlayerId) {
        self.local_player = Some(player);
    }

    pub(crate) fn insert(&mut self, peer: PeerId, player: PlayerId, entity: Entity) {
        self.peers.insert(peer, ConnectedPeer { entity, player });
    }

    /// Removes a peer; its entity and player.
    pub(crate) fn remove(&mut self, peer: PeerId) -> Option<(Entity, PlayerId)> {
        self.peers
            .remove(&peer)
            .map(|connected| (connected.entity, connected.player))
    }
}
