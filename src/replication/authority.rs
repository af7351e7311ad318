//! Who may own what: claims on existing entities, what happens to an owner's entities when it
//! leaves, and the host taking what is left to it.
//!
//! An owner announces an entity with a spawn. A spawn of an id already known here is a *claim*:
//! accepted when the entity was handed to the sender, or follows the host and the sender is
//! host; kept waiting when the hand-over or the departure that would allow it may still be on
//! its way (up to [`ReplicationConfig::handover_timeout`]; a connected claimant of an entity that
//! follows the host, up to [`MAX_HOST_CLAIM_WAIT`]); refused otherwise. A waiting claim keeps the
//! values its sender changes meanwhile, so the entity shows them once the claim is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bytes::Bytes;

use super::ReplicationConfig;
use super::ownership::Ownership;
use super::wire::{Spawn, SpawnFlags};
use super::{HandToHostOnLeave, HostOwned};
use crate::net::ConnectedPeers;
use crate::peer::PeerId;

/// What to do with a claim.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// Not allowed yet: what would allow it may still arrive.
    Wait,
    Refuse(String),
}

/// A spawn that had to wait for its sender to be allowed to own the entity.
#[derive(Debug)]
pub(crate) struct PendingClaim {
    pub(crate) sender: PeerId,
    pub(crate) since: Duration,
    /// The sender's tick of the update it came in.
    pub(crate) tick: u32,
    pub(crate) spawn: Spawn,
    /// The sender despawned it while the claim waited: if the claim is accepted, the entity
    /// goes (rather than being kept forever under an owner that no longer has it).
    pub(crate) despawned: bool,
    /// Values the sender changed or removed while the claim waited, newest per component:
    /// applied after the spawn's, so an accepted claim shows the claimant's state now, not
    /// when it claimed (its mutations were acknowledged, so it will not send them again).
    pub(crate) later: Vec<LaterValue>,
    /// The sender handed the entity on while the claim waited: once the claim is taken, the
    /// entity waits for this peer's claim in turn.
    pub(crate) handed_to: Option<PeerId>,
}

/// A change to a claimed entity that arrived while the claim waited.
#[derive(Debug)]
pub(crate) struct LaterValue {
    pub(crate) component: u16,
    /// The sender's tick of the message it came in.
    pub(crate) tick: u32,
    /// The new value; `None` when the sender removed the component.
    pub(crate) bytes: Option<Bytes>,
}

/// What becomes of a replica whose owner left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It follows the host: it waits to be taken over.
    Orphan,
    Despawn,
}

/// The claims waiting and the peers seen last frame.
#[derive(Resource, Default)]
pub(crate) struct Authority {
    /// Keyed by sender and its wire number, so that a despawn finds its claim at once (a peer
    /// sending despawns must not make this peer scan every waiting claim for each).
    pending: BTreeMap<(PeerId, u32), PendingClaim>,
    /// How many of `pending` each sender has (for its entity limit).
    pending_by: HashMap<PeerId, usize>,
    known: BTreeSet<PeerId>,
}

impl Authority {
    /// Peers that were connected last time and are not now; forgets their pending claims.
    pub(crate) fn departures(&mut self, peers: &ConnectedPeers) -> Vec<PeerId> {
        let current: BTreeSet<PeerId> = peers.ids().collect();
        let gone: Vec<PeerId> = self.known.difference(&current).copied().collect();
        self.known = current;
        self.pending.retain(|(sender, _), _| !gone.contains(sender));
        for peer in &gone {
            self.pending_by.remove(peer);
        }
        gone
    }

    /// How many claims of `sender` are waiting.
    pub(crate) fn pending_of(&self, sender: PeerId) -> usize {
        self.pending_by.get(&sender).copied().unwrap_or(0)
    }

    pub(crate) fn wait(&mut self, claim: PendingClaim) {
        let key = (claim.sender, claim.spawn.wire);
        if self.pending.insert(key, claim).is_none() {
            *self.pending_by.entry(key.0).or_default() += 1;
        }
    }

    /// The sender despawned what its waiting claim is about. Returns whether such a claim
    /// exists.
    pub(crate) fn despawned(&mut self, sender: PeerId, wire: u32) -> bool {
        let claim = self.pending.get_mut(&(sender, wire));
        claim.map(|claim| claim.despawned = true).is_some()
    }

    /// The sender handed on what its waiting claim is about. Returns whether such a claim
    /// exists.
    pub(crate) fn handed_on(&mut self, sender: PeerId, wire: u32, to: PeerId) -> bool {
        let claim = self.pending.get_mut(&(sender, wire));
        claim.map(|claim| claim.handed_to = Some(to)).is_some()
    }

    /// A value (or, with `None`, the removal) of a component of the entity `sender`'s waiting
    /// claim is about (if there is one) is kept with the claim. Returns whether such a claim
    /// exists.
    pub(crate) fn later_value(
        &mut self,
        sender: PeerId,
        wire: u32,
        component: u16,
        tick: u32,
        bytes: Option<&[u8]>,
    ) -> bool {
        let Some(claim) = self.pending.get_mut(&(sender, wire)) else {
            return false;
        };
        if tick <= claim.tick {
            return true;
        }
        let value = LaterValue {
            component,
            tick,
            bytes: bytes.map(Bytes::copy_from_slice),
        };
        // One per component (the registry bounds how many), so this stays small.
        match claim.later.iter_mut().find(|v| v.component == component) {
            // A removal and a value of the same tick: the removal came after, in its update.
            Some(held) if held.tick < tick || (held.tick == tick && value.bytes.is_none()) => {
                *held = value
            }
            Some(_) => {}
            None => claim.later.push(value),
        }
        true
    }

    pub(crate) fn take_pending(&mut self) -> Vec<PendingClaim> {
        self.pending_by.clear();
        std::mem::take(&mut self.pending).into_values().collect()
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// What becomes of each replica of the peers in `gone`.
pub(crate) fn fates(
    ownership: &Ownership,
    gone: &[PeerId],
    host: Option<PeerId>,
) -> Vec<(Entity, Fate)> {
    ownership
        .replicas_of(gone)
        .into_iter()
        .map(|(entity, flags)| {
            let fate = if flags.follows_host() && host.is_some() {
                Fate::Orphan
            } else {
                Fate::Despawn
            };
            (entity, fate)
        })
        .collect()
}

/// Whether `spawn` may make `sender` the owner of the existing `entity`.
pub(crate) fn may_claim(
    ownership: &Ownership,
    world: &World,
    peers: &ConnectedPeers,
    sender: PeerId,
    spawn: &Spawn,
    entity: Entity,
) -> Verdict {
    let host = peers.host();
    let host_role = spawn.flags.follows_host();
    if let Some(replica) = ownership.replica(entity) {
        if replica.owner == sender && replica.transfer_to.is_none() && replica.wire.is_some() {
            return Verdict::Accept; // the owner announcing it again
        }
        if replica.transfer_to == Some(sender) {
            return Verdict::Accept;
        }
        if replica.orphaned && host == Some(sender) {
            return Verdict::Accept;
        }
        if replica.flags.host_owned && host == Some(sender) && host_role {
            return Verdict::Accept;
        }
        // A suspended owner may have claimed, from its giver, an entity whose claim the giver
        // never got: when its grace runs out the giver takes the entity back, and that claim
        // may arrive before the grace runs out here. It waits rather than blaming the giver.
        let owner_around = peers.contains(replica.owner) || peers.is_suspended(replica.owner);
        return if owner_around || replica.transfer_to.is_some() {
            Verdict::Wait
        } else {
            Verdict::Refuse(format!(
                "claims entity {:#x}, which it was not given",
                spawn.net_id
            ))
        };
    }
    // Owned here: only the host may take over an entity that follows the host.
    let flags = world
        .get_entity(entity)
        .map_or(SpawnFlags::default(), |e| SpawnFlags {
            host_owned: e.contains::<HostOwned>(),
            hand_to_host: e.contains::<HandToHostOnLeave>(),
        });
    if flags.follows_host() && host_role {
        if host == Some(sender) {
            return Verdict::Accept;
        }
        return Verdict::Wait;
    }
    Verdict::Refuse(format!(
        "claims entity {:#x}, which is owned by this peer",
        spawn.net_id
    ))
}

/// Longest a claim on an entity that follows the host may wait for this peer's view of the
/// host to catch up: past it, the views disagree for a reason that is not a departure being
/// noticed (two hosts in a mesh that cannot heal, a member lying), and the claim is refused.
pub(crate) const MAX_HOST_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Whether `entity` follows the host *here*: by this peer's own record of it, never by what a
/// claimant says about it.
pub(crate) fn follows_host_here(ownership: &Ownership, world: &World, entity: Entity) -> bool {
    if let Some(replica) = ownership.replica(entity) {
        return replica.flags.follows_host();
    }
    world
        .get_entity(entity)
        .is_ok_and(|e| e.contains::<HostOwned>() || e.contains::<HandToHostOnLeave>())
}

/// Whether a claim kept waiting has waited too long. A connected peer's claim on an entity that
/// follows the host (here) waits longer, up to [`MAX_HOST_CLAIM_WAIT`]: the claimant is host in
/// its own view, and this peer's view (a departure not noticed here yet, a partial mesh being
/// resolved) will follow, so the claim is taken then rather than refused, which would blame an
/// honest peer and leave the entity frozen here. Such claims count against the sender's entity
/// limit, and are never accepted unless the sender becomes host here.
pub(crate) fn expired(
    claim: &PendingClaim,
    now: Duration,
    config: &ReplicationConfig,
    peers: &ConnectedPeers,
    follows_host_here: bool,
) -> bool {
    let waited = now.saturating_sub(claim.since);
    if follows_host_here && peers.contains(claim.sender) {
        return waited >= MAX_HOST_CLAIM_WAIT.max(config.handover_timeout);
    }
    waited >= config.handover_timeout
}
