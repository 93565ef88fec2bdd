//! Compiles `proto/votes.proto` with the vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT rather than tonic's INTERNAL (see the codec).
        .codec_path("crate::ingress::codec::VotesCodec")
        .file_descriptor_set_path(out_dir.join("votes_descriptor.bin"))
        .compile_protos(&["proto/votes.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/votes.proto");
    Ok(())
}
