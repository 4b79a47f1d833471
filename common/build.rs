//! Compiles the public etcd protos and triad's internal protos with a
//! vendored protoc, so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY-free: build scripts are single-threaded here.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = [
        "proto/etcd/kv.proto",
        "proto/etcd/auth.proto",
        "proto/etcd/rpc.proto",
        "proto/etcd/v3lock.proto",
        "proto/etcd/v3election.proto",
        "proto/triad/storage.proto",
        "proto/triad/raft.proto",
        "proto/triad/peer.proto",
        "proto/triad/profile.proto",
        "proto/otlp/trace_service.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        // prost's codec, but transactions nest as deep as etcd allows.
        .codec_path("crate::codec::TriadCodec")
        // Encoded writes travel as shared buffers from gatewayd's queue to
        // raftd's log, its peers and storaged: decoding slices the received
        // buffer and a clone (a retry, a replication read) copies nothing.
        .bytes(".triad.raft.v1.ProposeBatchRequest.requests")
        .bytes(".triad.storage.v1.ApplyEntry.request")
        .bytes(".triad.peer.v1.RaftMessage.body")
        .compile_protos(&protos, &["proto/etcd", "proto/triad", "proto/otlp"])?;
    // etcd's JSON gateway encoding (grpc-gateway's jsonpb with OrigName):
    // proto field names, int64 as strings, bytes as base64, enums by name,
    // defaults left out; unknown fields ignored, as grpc-gateway v1's
    // unmarshaler allows them. Only the public packages need it.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=proto/otlp");
    Ok(())
}
