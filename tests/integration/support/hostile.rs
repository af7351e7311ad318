//! A transport that also sends whatever a test slips into it: a peer that misbehaves on
//! purpose, for tests of what the others do about it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_peersync::transport::MemoryTransport;
use bevy_peersync::transport::Transport;
use bevy_peersync::transport::{Packet, TransportIo};
use bevy_peersync::{Channel, PeerId, PeerSocket, PeersyncPlugin, SocketState};
use bytes::Bytes;

pub struct Hostile {
    pub inner: MemoryTransport,
    pub inject: Arc<Mutex<Vec<Packet>>>,
}

impl Transport for Hostile {
    fn receive(&mut self, now: Duration, io: &mut TransportIo) {
        self.inner.receive(now, io);
    }
    fn send(&mut self, io: &mut TransportIo) {
        io.outgoing.append(&mut self.inject.lock().unwrap());
        self.inner.send(io);
    }
    fn state(&self) -> SocketState {
        self.inner.state()
    }
    fn close(&mut self) {
        self.inner.close();
    }
}

/// A reliable packet holding one whole message of `kind`, framed as the session frames it.
pub fn reliable_message(to: PeerId, kind: u16, body: &[u8]) -> Packet {
    let mut bytes = vec![0x01];
    put_varint(&mut bytes, u64::from(kind));
    put_varint(&mut bytes, body.len() as u64);
    bytes.extend_from_slice(body);
    Packet {
        peer: to,
        channel: Channel::Reliable,
        bytes: Bytes::from(bytes),
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Adds a peer to `sim` whose transport sends whatever is pushed to the returned list too, set
/// up like the others with `setup`. Call [`Sim::connect_all`](super::sim::Sim::connect_all)
/// afterwards.
pub fn join_hostile(sim: &mut super::sim::Sim, setup: fn(&mut App)) -> Arc<Mutex<Vec<Packet>>> {
    let inject = Arc::new(Mutex::new(Vec::new()));
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        PeersyncPlugin::with_socket(PeerSocket::new(Hostile {
            inner: sim.net.join(),
            inject: inject.clone(),
        })),
    ))
    .insert_resource(TimeUpdateStrategy::ManualDuration(super::sim::DT));
    setup(&mut app);
    sim.apps.push(app);
    inject
}
