//! Two builds that registered different components refuse each other, with a reason, on both
//! sides.

use std::time::Duration;

use crate::support::sim::{Health, Tag};
use bevy::prelude::*;
use bevy_peersync::prelude::*;
use bevy_peersync::{LinkConditioner, MemoryNetwork, PeerRefused};

#[derive(Resource, Default)]
struct Refusals(Vec<String>);

fn app(net: &MemoryNetwork, register: fn(&mut App)) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        PeersyncPlugin::with_socket(PeerSocket::new(net.join())),
    ))
    .init_resource::<Refusals>()
    .add_observer(|refused: On<PeerRefused>, mut seen: ResMut<Refusals>| {
        seen.0.push(refused.reason.clone())
    });
    register(&mut app);
    app
}

#[test]
fn different_registrations_are_refused_on_both_sides() {
    let net = MemoryNetwork::new(61);
    net.set_conditioner(LinkConditioner::PERFECT);
    let mut apps = [
        app(&net, |app| {
            app.replicate::<Health>().replicate::<Tag>();
        }),
        // Same components, other order: a different protocol.
        app(&net, |app| {
            app.replicate::<Tag>().replicate::<Health>();
        }),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while apps
        .iter()
        .any(|app| app.world().resource::<Refusals>().0.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "both sides should refuse the other"
        );
        for app in &mut apps {
            app.update();
        }
    }
    for app in &mut apps {
        let reasons = &app.world().resource::<Refusals>().0;
        assert!(reasons[0].contains("protocol mismatch"), "{reasons:?}");
        assert!(
            app.world().resource::<ConnectedPeers>().is_empty(),
            "no Peer for a refused peer"
        );
    }
}
