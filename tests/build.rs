//! `cfg(as_root)` when the tests are built as root: root-only tests run there (CI) and are
//! listed as ignored elsewhere.

#[path = "../common/build_as_root.rs"]
mod as_root;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    as_root::emit();
}
