#![doc = include_str!("../README.md")]

pub mod channel;
mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
pub mod peer;
mod platform;
mod plugin;
pub mod protocol;
pub mod replication;
pub mod session;
pub mod transport;
mod wire;

pub use channel::Channel;
pub use messages::{FromPeer, PeerMessage, PeerMessageAppExt, PeerMessageWriter, Target};
pub use peer::PeerId;
pub use plugin::{
    ConnectedPeers, Peer, PeerConnected, PeerDisconnected, PeerInputRejected, PeerRefused,
    PeerSocket, PeersyncPlugin, PeersyncSystems, SocketStateChanged,
};
pub use replication::{
    HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationAppExt, ReplicationConfig,
    TransferOwnershipExt, TransformCodec,
};
pub use session::{Delivery, InputError, PeerStats, SendError, SessionConfig};
pub use transport::matchbox::{IceServers, MatchboxConfig};
pub use transport::memory::{LinkConditioner, MemoryNetwork};
pub use transport::{SocketState, Transport};
pub use wire::WireError;

/// The usual imports.
pub mod prelude {
    pub use crate::replication::{
        HandToHostOnLeave, HostOwned, NetId, Owner, Replicated, ReplicationAppExt,
        TransferOwnershipExt, TransformCodec,
    };
    pub use crate::{
        Channel, ConnectedPeers, FromPeer, MatchboxConfig, Peer, PeerConnected, PeerDisconnected,
        PeerId, PeerInputRejected, PeerMessageAppExt, PeerMessageWriter, PeerRefused, PeerSocket,
        PeerStats, PeersyncPlugin, PeersyncSystems, SocketState, SocketStateChanged, Target,
    };
}
