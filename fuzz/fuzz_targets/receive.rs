//! A hostile peer against a real receiving app: handshake done honestly, then messages and raw
//! packets as the input says (see `bevy_peersync::fuzzing::receive`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bevy_peersync::fuzzing::receive(data);
});
