//! Every lobby integration test in one binary: one link instead of one per file. One module per
//! behaviour; `support` holds what they share.

mod support;

mod admin_endpoints;
mod auth;
mod fairness;
mod hostile_signals;
mod http;
mod join_limits;
mod limits;
mod matchbox_clients;
mod protocol;
mod rooms;
mod sharding;
mod shutdown;
mod signal_oracle;
mod static_site;
mod tokens;
mod turn;
