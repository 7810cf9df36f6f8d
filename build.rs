//! The shim binary is linked as a non-position-independent executable (`-no-pie`).
//!
//! Why: a PIE's dynamic relocations rewrite about 0.44 MiB of its read-only data (vtables,
//! tables of string slices) at every start, in every shim process: 110 more page faults
//! and about 1.2 ms more per start (the shim is started three times per container), and
//! that memory is private to each process instead of being the file's pages shared by
//! every shim on the machine. The cost is that the shim's own code sits at a fixed
//! address (its heap, stacks and libraries stay randomised), as Debian's own
//! containerd-shim-runc-v2, runc and containerd are built.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
