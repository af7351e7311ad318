//! The benchmark's baseline: a signaling server from matchbox_signaling's full-mesh builder, as
//! upstream builds one, listening on the address given as the first argument.

use matchbox_signaling::SignalingServer;

#[tokio::main]
async fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3537".into())
        .parse()
        .expect("an address like 127.0.0.1:3537");
    let mut server = SignalingServer::full_mesh_builder(addr).build();
    let bound = server.bind().expect("binds");
    println!("listening on {bound}");
    server.serve().await.expect("serves");
}
