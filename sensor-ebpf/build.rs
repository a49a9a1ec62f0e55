//! Linker flags for the XDP program.
fn main() {
    // bpf-linker defaults to --bpf-expand-memcpy-in-order, which sets LLVM's inline
    // store limits to zero: every small memset/memmove (zeroing an address, moving
    // a peeked array) then becomes a call to an out-of-line byte loop, several
    // hundred instructions per packet. Without it LLVM expands them into a few
    // word-sized stores.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
}
