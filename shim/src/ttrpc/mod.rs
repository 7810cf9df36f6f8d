//! ttrpc, the protocol containerd speaks with its shims: the wire format, and the server end
//! we run on the reactor (the event client is in [`crate::events`]).

pub mod server;
pub mod wire;
