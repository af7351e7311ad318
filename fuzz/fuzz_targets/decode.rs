//! The replication decoders alone: update messages, mutation headers, transform values.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bevy_peersync::fuzzing::decode(data);
});
