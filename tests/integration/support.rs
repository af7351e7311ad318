//! What the test modules share: a lobby and headless apps over WebRTC (`harness`), deterministic
//! simulations over the in-memory network (`sim`), a transport that misbehaves on purpose
//! (`hostile`), and child processes (`process`).

pub mod harness;
pub mod hostile;
pub mod process;
pub mod raw_member;
pub mod sim;
