//! The state file the `delete` action reads from a bundle after a shim crash: parses or
//! fails with an error naming the file, never panics; what parses survives a round trip.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runtime::state::ContainerState;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/bundle/shim-rs-state.json");
    if let Ok(state) = ContainerState::parse(data, path) {
        let bytes = serde_json::to_vec(&state).expect("a parsed state serialises");
        let again = ContainerState::parse(&bytes, path).expect("a written state parses");
        assert_eq!(again, state);
    }
});
