//! Every integration test in one binary: one link instead of one per file (see the closing
//! figures in BENCHMARKS.md). One module per behaviour; `support` holds what they share.

mod support;

mod at_rest;
mod authority;
mod bad_input;
mod browser;
mod budget;
mod churn;
mod churn_figures;
mod connection;
mod convergence;
mod delivery;
mod deltas;
mod demo_headless;
mod entity_mapping;
mod handback;
mod host_election;
mod host_messages;
mod hostile_signals;
mod interest;
mod interpolation;
mod late_join;
mod leave;
mod liveness;
mod lobby_keeper;
mod lost_hello;
mod lost_lobby;
mod mapped_messages;
mod mesh_scale;
mod messages;
mod nat;
mod net_entities;
mod net_sim;
mod network_figures;
mod protocol_mismatch;
mod replication_webrtc;
mod resume;
mod spawn_despawn;
mod spawn_flood;
