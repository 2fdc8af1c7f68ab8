//! Gives `herald-train` a run-time search path to libtorch, relative to the binary first, so it runs without
//! LD_LIBRARY_PATH from a moved checkout too (`crates/tch/build_rpath.rs`, shared with herald-tch's build
//! script).

#[path = "../tch/build_rpath.rs"]
mod build_rpath;

fn main() {
    build_rpath::emit();
}
