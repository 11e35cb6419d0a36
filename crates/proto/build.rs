//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/inference.proto", "proto/signal.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The signaling RPC is named `Connect`, which would clash with the generated
        // `connect` constructor; clients build a channel and call `new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
