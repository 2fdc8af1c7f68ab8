//! Gives herald-tch's test, example and bench binaries a run-time search path to libtorch (`build_rpath.rs`,
//! shared with herald-train's build script).

#[path = "build_rpath.rs"]
mod build_rpath;

fn main() {
    build_rpath::emit();
}
