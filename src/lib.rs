#![doc = include_str!("../README.md")]

// Layers, each using only those listed before it: the transport (the only code touching
// matchbox), the sans-io session and endpoint, the shared net layer, messages and replication
// (which never use each other), and the plugin that wires them. See ARCHITECTURE.md.
mod channel;
mod error;
mod identity;
mod peer;
mod platform;
mod protocol;
mod rng;
mod wire;

pub mod transport;

mod endpoint;
mod membership;
mod session;

mod net;

mod messages;
pub mod replication;

mod plugin;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

// The README (the crate's front page) links these by their short names.
#[cfg(doc)]
use replication::{HandToHostOnLeave, HostOwned, Owner};

pub use channel::Channel;
pub use error::{InputError, SendError};
pub use identity::{PlayerId, PlayerIdentity};
pub use messages::{
    DeliveryOutcome, DeliveryReport, FromPeer, MessageTicket, PeerMessage, PeerMessageAppExt,
    PeerMessageWriter, Target,
};
pub use net::{
    ConnectedPeers, DisconnectReason, HostChanged, Peer, PeerConnected, PeerDisconnected,
    PeerInputRejected, PeerRefused, PeerResumed, PeerSocket, PeerStats, PeersyncDiagnostics,
    PeersyncSystems, SessionMerged, SocketStateChanged,
};
pub use peer::PeerId;
pub use plugin::{PeersyncPlugin, WEBRTC_LOG_FILTER};
pub use session::{Delivery, SessionConfig};
pub use transport::SocketState;
pub use transport::matchbox::{IceServers, MatchboxConfig};
pub use transport::memory::{LinkConditioner, MemoryNetwork};
pub use wire::WireError;

/// The usual imports.
pub mod prelude {
    pub use crate::replication::{
        Audience, GridInterest, HandToHostOnLeave, HostOwned, InterestAppExt, Interpolate,
        InterpolationAppExt, NetId, Owner, Replicated, ReplicationAppExt, ReplicationPriority,
        Suspended, TransferOwnershipExt, TransformCodec, Viewpoint,
    };
    pub use crate::{
        Channel, ConnectedPeers, DisconnectReason, FromPeer, HostChanged, MatchboxConfig, Peer,
        PeerConnected, PeerDisconnected, PeerId, PeerInputRejected, PeerMessageAppExt,
        PeerMessageWriter, PeerRefused, PeerResumed, PeerSocket, PeerStats, PeersyncPlugin,
        PeersyncSystems, PlayerId, SessionMerged, SocketState, SocketStateChanged, Target,
    };
}
