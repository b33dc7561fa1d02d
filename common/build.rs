//! Generates the gRPC code from `proto/` with a pure-Rust protobuf compiler (protox), so a
//! machine with only `cargo` builds the project, and keeps the file descriptor set for
//! gRPC reflection; and sets `cfg(as_root)` for the root-only tests (`build_as_root.rs`).
use std::path::PathBuf;

#[path = "build_as_root.rs"]
mod as_root;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    as_root::emit();
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = proto_root.join("scriptd/v1/scriptd.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("scriptd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
