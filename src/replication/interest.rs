//! Interest management: which peers see each entity owned here.
//!
//! The owner of an entity decides who is shown it, peer by peer, once per network tick. A peer
//! that stops being shown an entity is sent its despawn (the replica goes away there); a peer
//! that starts being shown it is sent a spawn with its current state, as a newcomer would be.
//! Nothing about an entity (spawns, insertions, removals, changed values) ever goes to a peer
//! it is hidden from. Two rules decide, and an entity is shown only when both allow it:
//!
//! - [`Audience`], on the entity: everyone (the default), only some players, or all but some.
//!   Players are named by their [`PlayerId`], so a rule survives a player's resume under a
//!   new [`PeerId`](crate::PeerId).
//! - The distance rule, when the app has a [`GridInterest`] (see
//!   [`InterestAppExt::grid_interest`]): an entity with a [`Transform`] is shown to a peer when
//!   it is within [`GridInterest::radius`] of one of that peer's [`Viewpoint`]s. Entities
//!   without a `Transform`, and entities marked [`GridExempt`], are not concerned.
//!
//! Some entities are always shown, whatever the rules: [`Viewpoint`]s (every owner needs them
//! to apply the distance rule), and entities that follow the host
//! ([`HostOwned`](super::HostOwned), [`HandToHostOnLeave`](super::HandToHostOnLeave)) to the
//! host and to the peer next in line, so that whoever takes them over holds them.
//! ARCHITECTURE.md ("Interest management") walks the hard cases.

use std::collections::{BTreeMap, BTreeSet};

use bevy::prelude::*;
use serde::{Deserialize, Serialize};

use super::ReplicationAppExt;
use crate::identity::PlayerId;
use crate::peer::PeerId;

/// Which players are shown an entity owned here. Without it (or with
/// [`Everyone`](Audience::Everyone)) every peer is.
///
/// Read on the owner only: a replica's `Audience` does nothing. It is not replicated, so it
/// stays behind when the entity is handed over, unless every peer registers it
/// (`app.replicate::<Audience>()`), in which case it follows the entity (and every peer shown
/// the entity can read it).
#[derive(Component, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// Every peer.
    #[default]
    Everyone,
    /// Only these players.
    Only(BTreeSet<PlayerId>),
    /// Every player but these.
    AllBut(BTreeSet<PlayerId>),
}

impl Audience {
    /// Shown to these players only.
    pub fn only(players: impl IntoIterator<Item = PlayerId>) -> Self {
        Self::Only(players.into_iter().collect())
    }

    /// Shown to every player but these.
    pub fn all_but(players: impl IntoIterator<Item = PlayerId>) -> Self {
        Self::AllBut(players.into_iter().collect())
    }

    /// Whether `player` is in the audience. A peer whose player is not known yet is shown only
    /// what is shown to [`Everyone`](Audience::Everyone) or to all but some players.
    pub fn includes(&self, player: Option<PlayerId>) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::Only(players) => player.is_some_and(|player| players.contains(&player)),
            Audience::AllBut(players) => player.is_none_or(|player| !players.contains(&player)),
        }
    }
}

/// The distance rule: an entity owned here with a [`Transform`] is shown to a peer when its
/// translation is within [`radius`](Self::radius) of one of that peer's [`Viewpoint`]s. Set it
/// up with [`InterestAppExt::grid_interest`] on every peer; change or remove the resource at
/// any time (removing it shows every entity it hid).
///
/// Entities are bucketed by cell, so finding what a viewpoint sees looks at the cells around it
/// rather than at every entity: keep [`cell_size`](Self::cell_size) near the radius (a much
/// smaller cell means many cells to look at per viewpoint, a much larger one many entities per
/// cell). Distances are in three dimensions; a 2D game keeps its entities on one plane.
#[derive(Resource, Debug, Clone, Copy, PartialEq)]
pub struct GridInterest {
    /// Side of a grid cell, in world units.
    pub cell_size: f32,
    /// How far a viewpoint sees, in world units.
    pub radius: f32,
    /// How much farther than `radius` an entity already shown must go before it is hidden, so
    /// that one moving along the edge is not despawned and spawned again every tick.
    pub hysteresis: f32,
}

impl GridInterest {
    /// A viewpoint sees `radius` around it; cells of that size, and a tenth of it of
    /// hysteresis.
    pub fn new(radius: f32) -> Self {
        Self {
            cell_size: radius,
            radius,
            hysteresis: radius * 0.1,
        }
    }
}

/// Where a player sees from, for the distance rule: put it on an entity the player owns and
/// replicates (its avatar, its camera), with a [`Transform`]. A player may have several; one
/// without any is shown only what the distance rule does not concern.
///
/// Viewpoints are shown to every peer whatever the rules, since every owner needs them to
/// decide what their players see: a game that must hide where a player is uses a viewpoint
/// entity of its own (a `Transform` and this marker) rather than marking the avatar.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewpoint;

/// Leaves an entity with a [`Transform`] out of the distance rule: it is shown to every peer
/// its [`Audience`] includes, wherever it is.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GridExempt;

/// Sets up interest management rules.
pub trait InterestAppExt {
    /// Turns the distance rule on: replicates [`Viewpoint`] (so, like any registration, every
    /// peer must do it, in the same place among its registrations) and inserts `grid`.
    fn grid_interest(&mut self, grid: GridInterest) -> &mut Self;
}

impl InterestAppExt for App {
    fn grid_interest(&mut self, grid: GridInterest) -> &mut Self {
        self.replicate::<Viewpoint>().insert_resource(grid)
    }
}

/// What interest management hides, as of the last network tick: how many entities owned here
/// each connected peer is not shown, and how many times entities were shown or hidden.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct InterestStats {
    pub(super) hidden: BTreeMap<PeerId, usize>,
    pub(super) revealed: u64,
    pub(super) concealed: u64,
}

impl InterestStats {
    /// How many entities owned here `peer` is not shown.
    pub fn hidden_from(&self, peer: PeerId) -> usize {
        self.hidden.get(&peer).copied().unwrap_or(0)
    }

    /// Every connected peer with how many entities owned here it is not shown, in id order.
    pub fn hidden(&self) -> impl Iterator<Item = (PeerId, usize)> + '_ {
        self.hidden.iter().map(|(peer, count)| (*peer, *count))
    }

    /// How many times an entity owned here came into a peer's view (was spawned there again).
    pub fn revealed(&self) -> u64 {
        self.revealed
    }

    /// How many times an entity owned here went out of a peer's view (was despawned there).
    pub fn concealed(&self) -> u64 {
        self.concealed
    }
}
