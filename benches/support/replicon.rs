//! The bevy_replicon 0.42 baseline of the replication bench: one server app and its client apps
//! in this process, with no transport: after each update the bench moves the bytes the server
//! queued into the clients' inboxes and back, counting them on the way.
//!
//! Replicon is server-authoritative: the server owns every entity and clients only receive, so
//! its server plays our owner and its client our receiver.

#![allow(dead_code)]

use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::prelude::TransformCodec;
use bevy_peersync::replication::codec::ComponentCodec;
use bevy_replicon::prelude::{
    AppRuleExt, ClientMessages, ClientState, ConnectedClient, Remote, RepliconPlugins, RuleFns,
    ServerMessages, ServerPlugin, ServerState,
};
use bevy_replicon::shared::backend::channels::ServerChannel;
use bevy_replicon::shared::replication::registry::ctx::{SerializeCtx, WriteCtx};
use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};

use super::common::single_threaded;

pub use bevy_replicon::prelude::Replicated as RepliconReplicated;

/// The largest message the server builds, as our sessions' packet size (1160 bytes).
const MAX_MESSAGE: usize = 1160;

/// How a replicon app puts a transform into its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformEncoding {
    /// Replicon's documented way to leave out the scale (`replicate_as` with a serde struct of
    /// translation and rotation): 28 bytes of f32 through postcard.
    Serde,
    /// Our `TransformCodec::default()` inside replicon's messages: the same bytes per value as
    /// ours, so what differs is the machinery around them.
    SameCodec,
}

impl TransformEncoding {
    /// A short name for benchmark ids.
    pub fn label(self) -> &'static str {
        match self {
            TransformEncoding::Serde => "replicon_serde",
            TransformEncoding::SameCodec => "replicon_our_codec",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct TranslationRotation {
    translation: Vec3,
    rotation: Quat,
}

impl From<Transform> for TranslationRotation {
    fn from(transform: Transform) -> Self {
        Self {
            translation: transform.translation,
            rotation: transform.rotation,
        }
    }
}

impl From<TranslationRotation> for Transform {
    fn from(value: TranslationRotation) -> Self {
        Transform {
            translation: value.translation,
            rotation: value.rotation,
            ..Default::default()
        }
    }
}

fn write_with_codec(_: &mut SerializeCtx, transform: &Transform, out: &mut Vec<u8>) -> Result<()> {
    TransformCodec::default().encode(transform, out);
    Ok(())
}

fn read_with_codec(_: &mut WriteCtx, message: &mut Bytes) -> Result<Transform> {
    let mut rest: &[u8] = message;
    let transform = TransformCodec::default().decode(&mut rest)?;
    let read = message.len() - rest.len();
    message.advance(read);
    Ok(transform)
}

/// An app with replicon's server and client plugins, ticking (and so sending) every update,
/// on the same clock and executor as the bench's own apps.
pub fn replicon_app(encoding: TransformEncoding, frame: std::time::Duration) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        StatesPlugin,
        RepliconPlugins.set(ServerPlugin::new(PostUpdate)),
    ))
    .insert_resource(TimeUpdateStrategy::ManualDuration(frame));
    match encoding {
        TransformEncoding::Serde => {
            app.replicate_as::<Transform, TranslationRotation>();
        }
        TransformEncoding::SameCodec => {
            app.replicate_with(RuleFns::new(write_with_codec, read_with_codec));
        }
    }
    app.finish();
    app.cleanup();
    single_threaded(&mut app);
    app
}

/// A client app and the entity that stands for it in the server's world.
pub struct RepliconClient {
    pub app: App,
    on_server: Entity,
}

/// What crossed in one exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Crossed {
    pub messages: usize,
    pub bytes: usize,
    /// Of which on the unreliable channel (mutations).
    pub unreliable: usize,
}

/// The server app and its connected clients.
pub struct RepliconRoom {
    pub server: App,
    pub clients: Vec<RepliconClient>,
}

impl RepliconRoom {
    /// A running server with `clients` connected clients (handshake done), nothing replicated.
    pub fn new(encoding: TransformEncoding, clients: usize, frame: std::time::Duration) -> Self {
        let mut server = replicon_app(encoding, frame);
        server
            .world_mut()
            .resource_mut::<NextState<ServerState>>()
            .set(ServerState::Running);
        server.update();
        let clients = (0..clients)
            .map(|_| {
                let on_server = server
                    .world_mut()
                    .spawn(ConnectedClient {
                        max_size: MAX_MESSAGE,
                    })
                    .id();
                let mut app = replicon_app(encoding, frame);
                app.world_mut()
                    .resource_mut::<NextState<ClientState>>()
                    .set(ClientState::Connected);
                RepliconClient { app, on_server }
            })
            .collect();
        let mut room = Self { server, clients };
        // The client sends its protocol hash, the server authorizes it.
        for _ in 0..3 {
            room.update_clients();
            room.clients_to_server();
            room.server.update();
            room.server_to_clients();
        }
        room
    }

    /// Moves what the server queued into its clients' inboxes; what went to the first client.
    pub fn server_to_clients(&mut self) -> Crossed {
        let mut first = Crossed::default();
        let Self { server, clients } = self;
        let mut sent = server.world_mut().resource_mut::<ServerMessages>();
        for (to, channel, message) in sent.drain_sent() {
            let Some(index) = clients.iter().position(|c| c.on_server == to) else {
                continue;
            };
            if index == 0 {
                first.messages += 1;
                first.bytes += message.len();
                if channel == usize::from(ServerChannel::Mutations) {
                    first.unreliable += message.len();
                }
            }
            clients[index]
                .app
                .world_mut()
                .resource_mut::<ClientMessages>()
                .insert_received(channel, message);
        }
        first
    }

    /// Moves what the clients queued (acknowledgements) to the server; what the first sent.
    pub fn clients_to_server(&mut self) -> Crossed {
        let mut first = Crossed::default();
        let Self { server, clients } = self;
        for (index, client) in clients.iter_mut().enumerate() {
            let mut sent = client.app.world_mut().resource_mut::<ClientMessages>();
            let messages: Vec<(usize, Bytes)> = sent.drain_sent().collect();
            let mut inbox = server.world_mut().resource_mut::<ServerMessages>();
            for (channel, message) in messages {
                if index == 0 {
                    first.messages += 1;
                    first.bytes += message.len();
                }
                inbox.insert_received(client.on_server, channel, message);
            }
        }
        first
    }

    /// Updates every client once.
    pub fn update_clients(&mut self) {
        for client in &mut self.clients {
            client.app.update();
        }
    }

    /// Spawns `n` replicated transforms on the server and runs ticks until every client has them.
    pub fn spawn_and_sync(&mut self, n: usize) {
        for i in 0..n {
            self.server.world_mut().spawn((
                RepliconReplicated,
                Transform::from_xyz(i as f32 * 0.1, 1.0, 2.0),
            ));
        }
        for _ in 0..200 {
            self.server.update();
            self.server_to_clients();
            self.update_clients();
            self.clients_to_server();
            let synced = self.clients.iter_mut().all(|client| {
                let world = client.app.world_mut();
                world
                    .query_filtered::<(), (With<Remote>, With<Transform>)>()
                    .iter(world)
                    .count()
                    == n
            });
            if synced {
                return;
            }
        }
        panic!("replicon clients did not get {n} entities");
    }
}
