//! What crosses the launcher's channels (shim <-> launcher <-> namespace helper <-> init): one
//! packet of arbitrary bytes, received as each message type by the side that receives it.
//! Must decode or fail with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    runtime::launch::fuzz_channel_packet(data);
});
