//! Generates the etcd v3 client stubs (`proto/etcd/`, the subset of etcd's API the etcd
//! source uses) with the pure-Rust protobuf compiler (protox) the project already uses for
//! its own API, so a machine with only `cargo` builds the daemon.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [root.join("etcd/rpc.proto"), root.join("etcd/kv.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
