//! containerd-shim-rs-v1: argument parsing and dispatch only.

fn main() {
    std::process::exit(shim::protocol::main());
}
