//! Interest management on the owner's side: which of the entities owned here each peer is
//! shown, kept up to date once per network tick, and what that changes in what it is sent.
//!
//! The phase runs after the tick's operations and values are collected and before anything is
//! sent. It looks at the entities owned here (their rules, and where they are in a
//! [`SpatialIndex`] when the distance rule is on), works out for each peer the entities whose
//! visibility may have changed (new ones, ones whose rules changed, ones that came within or
//! went out of reach of its viewpoints) and decides only those. A peer's *view* then shapes
//! what it is sent: entities it starts being shown get a spawn with their current state;
//! entities it stops being shown get a despawn; the tick's operations on entities hidden from
//! it are left out, and so are their values (see [`PeerView::shows`]). While no rule is in use
//! and nothing is hidden, the phase does nothing.
//!
//! Hard cases (ARCHITECTURE.md, "Interest management"):
//! - an entity that became ours (handed to us, or taken over as host) may still be held by a
//!   peer we do not show it to, under its previous owner: that peer is sent the spawn without
//!   its values and a despawn, so it drops it;
//! - an entity handed to a peer it is hidden from is spawned there (with its values) first;
//! - a peer that resumed may hold entities it is no longer shown: its snapshot despawns them.

mod grid;
mod messages;

use bevy::ecs::change_detection::Tick as ChangeTick;
use bevy::ecs::query::QueryState;
use bevy::platform::collections::{HashMap, HashSet};
use bevy::prelude::*;

use self::grid::SpatialIndex;
use super::Tick;
use super::stream::PeerStream;
use crate::identity::PlayerId;
use crate::net::ConnectedPeers;
use crate::peer::PeerId;
use crate::replication::interest::{Audience, GridExempt, GridInterest, InterestStats, Viewpoint};
use crate::replication::ownership::Ownership;
use crate::replication::{Owner, Replicated};

/// Replicated entities with what their visibility depends on.
type ScanQuery = QueryState<
    (
        Entity,
        &'static Owner,
        Option<Ref<'static, Transform>>,
        Option<Ref<'static, Audience>>,
        Has<Viewpoint>,
        Has<GridExempt>,
    ),
    With<Replicated>,
>;

/// Where each peer's viewpoints are.
type ViewpointQuery = QueryState<(&'static Transform, &'static Owner), With<Viewpoint>>;

struct Queries {
    scan: ScanQuery,
    viewpoints: ViewpointQuery,
    audiences: QueryState<(), With<Audience>>,
}

impl Queries {
    fn new(world: &mut World) -> Self {
        Self {
            scan: world.query_filtered(),
            viewpoints: world.query_filtered(),
            audiences: world.query_filtered(),
        }
    }
}

/// What an entity's visibility depends on, besides where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Traits {
    viewpoint: bool,
    audience: bool,
    follows_host: bool,
    /// Concerned by the distance rule: it is in the spatial index.
    gridded: bool,
}

/// An entity owned here, as the phase last saw it.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    wire: u32,
    traits: Traits,
    /// The tick it was first seen owned here (under this wire number).
    first_seen: u32,
    /// The tick it was last seen owned here.
    seen: u32,
}

/// One peer's view of the entities owned here.
#[derive(Debug, Default)]
pub(super) struct PeerView {
    /// Wire numbers of the entities it is not shown.
    hidden: HashSet<u32>,
    /// Entities of the spatial index within reach of its viewpoints at the last tick.
    near: HashSet<Entity>,
    /// Entities it was shown again, by wire number, with the tick of the spawn that showed them:
    /// mutations of them need that update applied first. Kept (even while no rule is in use)
    /// until the entity's own structural tick passes it, it is hidden, or it is no longer ours.
    floors: HashMap<u32, Floor>,
    /// Wire numbers of the entities shown to it this tick: their spawn holds their values.
    revealed_now: HashSet<u32>,
    /// This tick: entities it starts being shown (it is sent their spawn)...
    reveal: Vec<Entity>,
    /// ...and wire numbers of those it stops being shown (it is sent their despawn).
    conceal: Vec<u32>,
    /// Entities whose visibility to it may have changed this tick (besides everyone's).
    candidates: Vec<Entity>,
    /// It gets a snapshot this tick: its view is worked out whole, with no transitions.
    fresh: bool,
    /// It resumed: it may hold entities it is not shown any more, which its snapshot despawns.
    resumed: bool,
}

/// The update a peer must have applied before a mutation of an entity shown to it again.
#[derive(Debug, Clone, Copy)]
struct Floor {
    entity: Entity,
    tick: u32,
}

impl PeerView {
    /// Whether the entity numbered `wire` has its values sent to this peer in mutations: it is
    /// shown, and was not spawned there this tick (the spawn holds its current values).
    pub(super) fn shows(&self, wire: u32) -> bool {
        if self.hidden.is_empty() && self.revealed_now.is_empty() {
            return true; // no lookups for the common case
        }
        !self.hidden.contains(&wire) && !self.revealed_now.contains(&wire)
    }

    /// The update this peer must have applied before a mutation of the entity numbered `wire`,
    /// beyond the entity's own: the spawn that last showed it the entity, if any.
    pub(super) fn needs(&self, wire: u32) -> u32 {
        if self.floors.is_empty() {
            return 0;
        }
        self.floors.get(&wire).map_or(0, |floor| floor.tick)
    }
}

/// The interest phase's state, kept in [`SendState`](super::SendState).
#[derive(Default)]
pub(super) struct Interest {
    /// Whether the phase ran last tick (some rule in use, or something hidden).
    active: bool,
    entities: HashMap<Entity, Tracked>,
    /// Entities concerned by the distance rule, while it is on.
    index: Option<SpatialIndex>,
    grid: Option<GridInterest>,
    /// The host and the peer next in line, at the last tick.
    roles: (Option<PeerId>, Option<PeerId>),
    views: HashMap<PeerId, PeerView>,
    /// Wire numbers of entities that became ours this tick (handed to us, taken over).
    adopted_now: HashSet<u32>,
    /// Wire numbers of entities no longer ours: forgotten once this tick's messages are out.
    gone: Vec<u32>,
    /// Peers that resumed and have not been sent their snapshot yet.
    resumed: HashSet<PeerId>,
    queries: Option<Queries>,
    /// The view of a peer shown everything.
    everything: PeerView,
    revealed: u64,
    concealed: u64,
}

impl Interest {
    /// `wire` numbers an entity that became ours this tick rather than one spawned here.
    pub(super) fn adopted(&mut self, wire: u32) {
        self.adopted_now.insert(wire);
    }

    /// Takes note of the peers that resumed this frame (called every frame, tick or not).
    pub(super) fn note_resumes(&mut self, peers: &ConnectedPeers) {
        self.resumed
            .extend(peers.continuity.resumed.iter().map(|(_, now)| *now));
    }

    /// What `peer`'s mutations are filtered by (while no rule is in use, only floors remain).
    pub(super) fn view(&self, peer: PeerId) -> &PeerView {
        self.views.get(&peer).unwrap_or(&self.everything)
    }

    fn hides_anything(&self) -> bool {
        self.views.values().any(|view| !view.hidden.is_empty())
    }

    /// No rule in use and nothing hidden: forgets everything until a rule comes back, but the
    /// floors of entities shown lately.
    fn rest(&mut self) {
        self.active = false;
        self.entities.clear();
        self.index = None;
        self.grid = None;
        self.views.retain(|_, view| !view.floors.is_empty());
        for view in self.views.values_mut() {
            view.near.clear();
            view.candidates.clear();
        }
    }

    /// Drops the floors no longer needed: of entities no longer ours (or ours under another
    /// number), or whose own structural tick (which every mutation of them needs) passed it;
    /// and the views of peers gone.
    fn prune_floors(&mut self, ownership: &Ownership, streams: &HashMap<PeerId, PeerStream>) {
        let active = self.active;
        self.views.retain(|peer, view| {
            view.floors.retain(|wire, floor| {
                ownership
                    .owned(floor.entity)
                    .is_some_and(|owned| owned.wire == *wire && owned.struct_tick < floor.tick)
            });
            streams.contains_key(peer) && (active || !view.floors.is_empty())
        });
    }

    /// After this tick's messages: forgets the tick's transitions and the entities gone.
    pub(super) fn finish(&mut self) {
        for view in self.views.values_mut() {
            view.reveal.clear();
            view.conceal.clear();
            view.candidates.clear();
            view.fresh = false;
            view.resumed = false;
            view.revealed_now.clear();
            for wire in &self.gone {
                view.hidden.remove(wire);
                view.floors.remove(wire);
            }
        }
        self.gone.clear();
        self.adopted_now.clear();
    }

    /// One view per peer: a fresh one for a peer about to get a snapshot.
    fn sync_views(&mut self, streams: &HashMap<PeerId, PeerStream>) {
        self.views.retain(|peer, _| streams.contains_key(peer));
        for (peer, stream) in streams {
            if stream.needs_snapshot {
                let resumed = self.resumed.remove(peer);
                self.views.insert(
                    *peer,
                    PeerView {
                        fresh: true,
                        resumed,
                        ..Default::default()
                    },
                );
            } else {
                self.views.entry(*peer).or_default();
            }
        }
    }

    /// Follows the grid settings: a new cell size rebuilds the index.
    fn configure_grid(&mut self, grid: Option<GridInterest>) {
        match grid {
            None => self.index = None,
            Some(grid) => {
                let fits = self.index.as_ref().is_some_and(|index| {
                    index.cell_size() == SpatialIndex::new(grid.cell_size).cell_size()
                });
                if !fits {
                    self.index = Some(SpatialIndex::new(grid.cell_size));
                    // Every entity is placed again by the scan.
                    for tracked in self.entities.values_mut() {
                        tracked.traits.gridded = false;
                    }
                }
            }
        }
        self.grid = grid;
    }

    /// Looks at every entity owned here: new ones, ones whose rules changed, ones that moved;
    /// forgets the ones no longer ours.
    fn scan(
        &mut self,
        scan: &mut ScanQuery,
        world: &World,
        ownership: &Ownership,
        since: Option<ChangeTick>,
        tick: u32,
    ) -> Scanned {
        let mut scanned = Scanned::default();
        let changed_since = |last: ChangeTick, this_run: ChangeTick| {
            since.is_none_or(|since| last.is_newer_than(since, this_run))
        };
        let this_run = world.read_change_tick();
        for (entity, owner, transform, audience, viewpoint, exempt) in scan.iter(world) {
            if !owner.is_local() {
                continue;
            }
            let Some(owned) = ownership.owned(entity) else {
                continue;
            };
            let position = transform
                .as_ref()
                .filter(|_| self.index.is_some() && !viewpoint && !exempt);
            let traits = Traits {
                viewpoint,
                audience: audience.is_some(),
                follows_host: owned.flags.follows_host(),
                gridded: position.is_some(),
            };
            if let (Some(index), Some(position)) = (&mut self.index, position)
                && (!index.contains(entity) || changed_since(position.last_changed(), this_run))
            {
                index.place(entity, position.translation);
            } else if position.is_none()
                && let Some(index) = &mut self.index
            {
                index.remove(entity);
            }
            let audience_changed = audience
                .as_ref()
                .is_some_and(|audience| changed_since(audience.last_changed(), this_run));
            let fresh = Tracked {
                wire: owned.wire,
                traits,
                first_seen: tick,
                seen: tick,
            };
            match self.entities.get_mut(&entity) {
                Some(tracked) if tracked.wire == owned.wire => {
                    if tracked.traits != traits || audience_changed {
                        scanned.changed.push(entity);
                    }
                    tracked.traits = traits;
                    tracked.seen = tick;
                }
                Some(tracked) => {
                    // Announced again under a new number (it left us and came back).
                    self.gone.push(tracked.wire);
                    *tracked = fresh;
                    scanned.new.push(entity);
                }
                None => {
                    self.entities.insert(entity, fresh);
                    scanned.new.push(entity);
                }
            }
        }
        let (gone, index) = (&mut self.gone, &mut self.index);
        self.entities.retain(|entity, tracked| {
            let kept = tracked.seen == tick;
            if !kept {
                gone.push(tracked.wire);
                if let Some(index) = index {
                    index.remove(*entity);
                }
            }
            kept
        });
        scanned
    }

    /// Works out which indexed entities are within reach of each peer's viewpoints; those that
    /// came within reach or went out of it are that peer's candidates.
    fn refresh_near(&mut self, viewpoints: &mut ViewpointQuery, world: &World) {
        let (Some(grid), Some(index)) = (self.grid, &self.index) else {
            for view in self.views.values_mut() {
                view.near.clear();
            }
            return;
        };
        let mut by_peer: HashMap<PeerId, Vec<Vec3>> = HashMap::default();
        for (transform, owner) in viewpoints.iter(world) {
            if let Some(peer) = owner.peer() {
                by_peer.entry(peer).or_default().push(transform.translation);
            }
        }
        let reach = grid.radius + grid.hysteresis.max(0.0);
        for (peer, view) in &mut self.views {
            let mut near = HashSet::default();
            for point in by_peer.get(peer).into_iter().flatten() {
                index.near(*point, reach, |entity, distance| {
                    // Beyond the radius, only what was shown stays shown (the hysteresis band).
                    if distance <= grid.radius || view.near.contains(&entity) {
                        near.insert(entity);
                    }
                });
            }
            let entered = near.iter().filter(|entity| !view.near.contains(*entity));
            let left = view.near.iter().filter(|entity| !near.contains(*entity));
            let mut candidates: Vec<Entity> = entered.chain(left).copied().collect();
            view.candidates.append(&mut candidates);
            view.near = near;
        }
    }

    /// Decides the candidates of each peer, and records the transitions. Returns the entities
    /// each peer stops being shown.
    fn decide(&mut self, context: &Decision<'_>) -> Vec<(PeerId, Vec<Entity>)> {
        let mut concealed = Vec::new();
        let entities = &self.entities;
        for (peer, view) in &mut self.views {
            let judge = Judge {
                world: context.world,
                roles: self.roles,
                peer: *peer,
                player: context.peers.player(*peer),
            };
            if view.fresh {
                view.hidden = entities
                    .iter()
                    .filter(|(entity, tracked)| !judge.shows(**entity, tracked, &view.near))
                    .map(|(_, tracked)| tracked.wire)
                    .collect();
                continue;
            }
            let mut candidates = std::mem::take(&mut view.candidates);
            if context.everything {
                candidates.extend(entities.keys());
            } else {
                candidates.extend(&context.scanned.new);
                candidates.extend(&context.scanned.changed);
                if context.roles_changed {
                    candidates.extend(
                        entities
                            .iter()
                            .filter(|(_, tracked)| tracked.traits.follows_host)
                            .map(|(entity, _)| *entity),
                    );
                }
            }
            let mut gone_from_view = Vec::new();
            for entity in candidates {
                let Some(tracked) = entities.get(&entity) else {
                    continue;
                };
                let shown = judge.shows(entity, tracked, &view.near);
                let wire = tracked.wire;
                if tracked.first_seen == context.tick && context.announced_now.contains(&entity) {
                    // Announced this tick: a peer not shown it is simply not sent its spawn.
                    if !shown {
                        view.hidden.insert(wire);
                    }
                    continue;
                }
                let hidden = view.hidden.contains(&wire);
                if hidden && shown {
                    view.hidden.remove(&wire);
                    view.reveal.push(entity);
                    view.revealed_now.insert(wire);
                    let floor = Floor {
                        entity,
                        tick: context.tick,
                    };
                    view.floors.insert(wire, floor);
                    self.revealed += 1;
                } else if !hidden && !shown {
                    view.hidden.insert(wire);
                    view.conceal.push(wire);
                    view.floors.remove(&wire);
                    gone_from_view.push(entity);
                    self.concealed += 1;
                }
            }
            if !gone_from_view.is_empty() {
                concealed.push((*peer, gone_from_view));
            }
        }
        concealed
    }

    fn publish(&self, stats: &mut InterestStats) {
        stats.hidden = self
            .views
            .iter()
            .map(|(peer, view)| (*peer, view.hidden.len()))
            .collect();
        stats.revealed = self.revealed;
        stats.concealed = self.concealed;
    }
}

/// What the scan found.
#[derive(Default)]
struct Scanned {
    /// Entities first seen owned here this tick.
    new: Vec<Entity>,
    /// Entities whose rules changed.
    changed: Vec<Entity>,
}

/// What deciding the peers' candidates needs from the tick.
struct Decision<'a> {
    world: &'a World,
    peers: &'a ConnectedPeers,
    scanned: &'a Scanned,
    announced_now: &'a HashSet<Entity>,
    tick: u32,
    /// Decide every entity for every peer (the rules changed as a whole).
    everything: bool,
    roles_changed: bool,
}

/// The rules, applied to one peer.
struct Judge<'a> {
    world: &'a World,
    roles: (Option<PeerId>, Option<PeerId>),
    peer: PeerId,
    player: Option<PlayerId>,
}

impl Judge<'_> {
    fn shows(&self, entity: Entity, tracked: &Tracked, near: &HashSet<Entity>) -> bool {
        let traits = tracked.traits;
        if traits.viewpoint {
            return true;
        }
        let (host, next) = self.roles;
        if traits.follows_host && (Some(self.peer) == host || Some(self.peer) == next) {
            return true;
        }
        if traits.audience
            && let Some(audience) = self.world.get::<Audience>(entity)
            && !audience.includes(self.player)
        {
            return false;
        }
        !traits.gridded || near.contains(&entity)
    }
}

impl Tick<'_> {
    /// The interest phase: brings every peer's view up to date (module docs).
    pub(super) fn interest(&mut self) {
        let streams = &self.state.peers;
        let interest = &mut self.state.interest;
        interest.resumed.retain(|peer| !streams.contains_key(peer));
        interest.prune_floors(self.ownership, streams);
        let mut queries = interest
            .queries
            .take()
            .unwrap_or_else(|| Queries::new(self.world));
        let world: &World = self.world;
        let grid = world.get_resource::<GridInterest>().copied();
        let audiences = queries.audiences.iter(world).next().is_some();
        if grid.is_none() && !audiences && !interest.hides_anything() {
            interest.queries = Some(queries);
            if interest.active {
                interest.rest();
                self.world.resource_mut::<InterestStats>().hidden.clear();
            }
            return;
        }
        let everything = !interest.active || grid != interest.grid;
        interest.active = true;
        interest.sync_views(streams);
        interest.configure_grid(grid);
        let scanned = interest.scan(
            &mut queries.scan,
            world,
            self.ownership,
            self.state.since,
            self.tick,
        );
        interest.refresh_near(&mut queries.viewpoints, world);
        let roles = (self.peers.host(), self.peers.successor());
        let roles_changed = roles != interest.roles;
        interest.roles = roles;
        let concealed = interest.decide(&Decision {
            world,
            peers: self.peers,
            scanned: &scanned,
            announced_now: &self.spawned_now,
            tick: self.tick,
            everything,
            roles_changed,
        });
        interest.queries = Some(queries);
        for (peer, entities) in concealed {
            if let Some(stream) = self.state.peers.get_mut(&peer) {
                stream.forget_entities(&entities);
            }
        }
        let mut stats = self.world.resource_mut::<InterestStats>();
        self.state.interest.publish(&mut stats);
    }
}
