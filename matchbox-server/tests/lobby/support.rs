//! What the test modules share: a raw WebSocket and HTTP client that asserts the exact bytes a
//! matchbox client would see (`client`), and real matchbox_socket peers (`matchbox`).

pub mod client;
pub mod matchbox;
