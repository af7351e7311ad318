//! Deterministic simulations: apps on a [`MemoryNetwork`] with a manual clock, stepped in lock
//! step (each app's `Time<Real>` and the network's clock advance by the same `dt`).

use std::collections::BTreeMap;
use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::prelude::*;
use bevy_peersync::replication::Suspended;
use bevy_peersync::replication::codec::ComponentCodec;
use bevy_peersync::{LinkConditioner, MemoryNetwork, SessionConfig};
use serde::{Deserialize, Serialize};

/// 60 frames per second.
pub const DT: Duration = Duration::from_nanos(16_666_667);

pub struct Sim {
    pub net: MemoryNetwork,
    pub apps: Vec<App>,
    pub now: Duration,
    /// Apps that are not stepped (a hung process): they send nothing, and their links stay up.
    pub frozen: Vec<usize>,
    setup: fn(&mut App),
}

impl Sim {
    pub fn new(seed: u64, conditioner: LinkConditioner, peers: usize, setup: fn(&mut App)) -> Self {
        let net = MemoryNetwork::new(seed);
        net.set_conditioner(conditioner);
        let mut sim = Sim {
            net,
            apps: Vec::new(),
            now: Duration::ZERO,
            frozen: Vec::new(),
            setup,
        };
        for _ in 0..peers {
            sim.join();
        }
        sim
    }

    /// Adds a peer (a late joiner once the others are running).
    pub fn join(&mut self) -> usize {
        self.join_with_session(SessionConfig::default())
    }

    /// Adds a peer with its own timings (e.g. one that notices departures later than others).
    pub fn join_with_session(&mut self, session: SessionConfig) -> usize {
        let mut peersync = PeersyncPlugin::with_socket(PeerSocket::new(self.net.join()));
        peersync.session = session;
        let mut app = App::new();
        app.add_plugins((MinimalPlugins, peersync))
            .insert_resource(TimeUpdateStrategy::ManualDuration(DT));
        (self.setup)(&mut app);
        app.finish();
        app.cleanup();
        self.apps.push(app);
        self.apps.len() - 1
    }

    pub fn step(&mut self) {
        for (index, app) in self.apps.iter_mut().enumerate() {
            if !self.frozen.contains(&index) {
                app.update();
            }
        }
        self.net.advance(DT);
        self.now += DT;
    }

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Steps until `done`, failing after `limit` of simulated time; returns the time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> Duration {
        let start = self.now;
        loop {
            if done(self) {
                return self.now - start;
            }
            assert!(
                self.now - start <= limit,
                "after {limit:?} of simulated time, still not: {what}"
            );
            self.step();
        }
    }

    /// Steps until every peer sees every other and all agree on the host (the room settled).
    pub fn connect_all(&mut self) {
        let n = self.apps.len();
        self.run_until(
            Duration::from_secs(10),
            "every peer sees every other and all agree on the host",
            |sim| {
                let first = sim.apps[0].world().resource::<ConnectedPeers>().host();
                first.is_some()
                    && sim.apps.iter().all(|app| {
                        let peers = app.world().resource::<ConnectedPeers>();
                        peers.len() == n - 1 && peers.host() == first
                    })
            },
        );
    }

    /// The host every app agrees on, if they do.
    pub fn agreed_host(&self) -> Option<PeerId> {
        let first = self.apps[0].world().resource::<ConnectedPeers>().host();
        self.apps
            .iter()
            .all(|app| app.world().resource::<ConnectedPeers>().host() == first)
            .then_some(first)
            .flatten()
    }
}

pub fn local_id(app: &App) -> PeerId {
    app.world()
        .resource::<ConnectedPeers>()
        .local_id()
        .expect("in the room")
}

/// A serde-replicated component.
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Health(pub u32);

/// Another one, inserted and removed during tests.
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tag(pub String);

/// The usual registrations, identical on every peer.
pub fn replicate_basics(app: &mut App) {
    app.replicate_codec::<Transform>(TransformCodec::default())
        .replicate::<Health>()
        .replicate::<Tag>();
}

/// An [`Owner`] as tests compare it: by connection (the player behind it is checked where it
/// matters, in `resume.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerIs {
    Local,
    Peer(PeerId),
}

impl From<&Owner> for OwnerIs {
    fn from(owner: &Owner) -> Self {
        match owner.peer() {
            None => OwnerIs::Local,
            Some(peer) => OwnerIs::Peer(peer),
        }
    }
}

/// What one peer holds of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub owner: PeerId,
    pub transform: Option<Transform>,
    pub health: Option<Health>,
    pub tag: Option<Tag>,
}

/// Every replicated entity an app holds, by net id (entities not yet sent have none and are
/// left out).
pub fn held(app: &mut App) -> BTreeMap<u64, Held> {
    let me = local_id(app);
    let world = app.world_mut();
    let mut query = world.query_filtered::<(
        &NetId,
        &Owner,
        Option<&Transform>,
        Option<&Health>,
        Option<&Tag>,
    ), With<Replicated>>();
    query
        .iter(world)
        .map(|(id, owner, transform, health, tag)| {
            let owner = owner.peer().unwrap_or(me);
            (
                id.0,
                Held {
                    owner,
                    transform: transform.copied(),
                    health: health.cloned(),
                    tag: tag.cloned(),
                },
            )
        })
        .collect()
}

/// The owners' truth: every entity as its owner has it, with the transform as a receiver decodes
/// it (quantized).
pub fn truth(apps: &mut [App]) -> BTreeMap<u64, Held> {
    let codec = TransformCodec::default();
    let mut truth = BTreeMap::new();
    for app in apps.iter_mut() {
        let me = local_id(app);
        for (id, mut held) in held(app) {
            if held.owner == me {
                held.transform = held.transform.map(|t| {
                    let mut bytes = Vec::new();
                    codec.encode(&t, &mut bytes);
                    codec.decode(&mut bytes.as_slice()).unwrap()
                });
                truth.insert(id, held);
            }
        }
    }
    truth
}

/// Whether every app holds exactly the owners' truth.
pub fn converged(apps: &mut [App]) -> bool {
    let truth = truth(apps);
    apps.iter_mut().all(|app| {
        let me = local_id(app);
        let mut mine = held(app);
        // Our own entities are the truth itself (unquantized): compare replicas only.
        mine.retain(|_, h| h.owner != me);
        let expected: BTreeMap<u64, Held> = truth
            .iter()
            .filter(|(_, h)| h.owner != me)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        mine == expected
    })
}

/// What an app reported as bad input from its peers ([`PeerInputRejected`]), as text.
#[derive(Resource, Default)]
pub struct Rejections(pub Vec<String>);

/// Collects what `app` reports as bad input into [`Rejections`].
pub fn note_rejections(app: &mut App) {
    app.init_resource::<Rejections>().add_observer(
        |rejected: On<PeerInputRejected>, mut seen: ResMut<Rejections>| {
            seen.0.push(format!("{:?}", *rejected));
        },
    );
}

/// What `app` holds of the entity with `health`: (net id, owner, suspended), one per copy.
pub fn copies(app: &mut App, health: u32) -> Vec<(u64, OwnerIs, bool)> {
    let world = app.world_mut();
    let mut query = world.query::<(&NetId, &Owner, &Health, Has<Suspended>)>();
    query
        .iter(world)
        .filter(|(_, _, h, _)| h.0 == health)
        .map(|(id, owner, _, suspended)| (id.0, owner.into(), suspended))
        .collect()
}
