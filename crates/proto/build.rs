//! Generates the etcd v3 API code from `proto/` with a vendored protoc, so building needs no
//! system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded at this point; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "etcd/kv.proto",
        "etcd/rpc.proto",
        "raftkv/command.proto",
        "raftkv/peer.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure()
        // Keys and values as `Bytes`: moved between layers without copying.
        .bytes(".")
        .compile_protos(&files, &[root])?;
    Ok(())
}
