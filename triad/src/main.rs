//! triad: the operator CLI (etcd's etcdutl counterpart). `triad up` runs a
//! supervised local member for development and demos.

mod ctl;
mod proxy_commands;
mod snapshot;
mod supervisor;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "triad", version, about = "triad operator tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Restore a snapshot (etcdctl snapshot save, against etcd or triad)
    /// into a new member's data directory; start it with triad up / the
    /// daemons' --initial-cluster.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The new member's data directory (must not hold a member yet).
        #[arg(long)]
        data_dir: PathBuf,
        /// Restore a bbolt file without etcd's trailing SHA-256 (e.g. a
        /// copy of an etcd member's db file).
        #[arg(long)]
        skip_hash_check: bool,
    },
    /// Check a snapshot's integrity and show what it holds (etcdctl's
    /// fields: hash, revision, total keys, total size) and its format.
    Status {
        file: PathBuf,
        /// simple, table or json.
        #[arg(short = 'w', long, default_value = "simple")]
        write_out: String,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Kill, restart, pause or resume one daemon of a member run by
    /// `triad up` (from another terminal).
    Ctl {
        action: ctl::Action,
        /// storaged, raftd or gatewayd.
        daemon: String,
        /// The data dir given to triad up.
        #[arg(long, default_value = "triad-data")]
        data_dir: PathBuf,
        /// Member index of a `triad up --members N` cluster.
        #[arg(long)]
        member: Option<u16>,
    },
    /// Offline tools for backup files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// etcd's `gateway start` with etcd's flags: gatewayd's L4 proxy.
    #[command(subcommand)]
    Gateway(proxy_commands::GatewayCommand),
    /// etcd's `grpc-proxy start` with etcd's flags: gatewayd's L7 proxy.
    #[command(subcommand, name = "grpc-proxy")]
    GrpcProxy(proxy_commands::GrpcProxyCommand),
    /// Run a local member: storaged, raftd and gatewayd as supervised child
    /// processes. Prints `ready <client endpoints>` once it serves; Ctrl-C
    /// or SIGTERM stops all three cleanly.
    Up {
        /// Data directory of the member (created if missing).
        #[arg(long, default_value = "triad-data")]
        data_dir: PathBuf,
        /// Client port P (gRPC + HTTP); the peer port is P+1. Member i of a
        /// cluster uses P + 10000*i.
        #[arg(long, default_value_t = 2379)]
        client_port: u16,
        /// Run a local cluster of this many members on loopback (each in
        /// DATA_DIR/m<i>).
        #[arg(long, default_value_t = 1)]
        members: u16,
        /// The member's name (a single member; default "default").
        #[arg(long, conflicts_with = "members")]
        name: Option<String>,
        /// Join an existing cluster as this one member: the cluster
        /// including it (name=peerURL,...). The member must have been added
        /// first (etcdctl member add).
        #[arg(long, requires = "name", conflicts_with = "members")]
        join: Option<String>,
        /// Start this one member of a new cluster whose other members start
        /// elsewhere: the whole cluster (name=peerURL,...).
        #[arg(long, requires = "name", conflicts_with_all = ["members", "join"])]
        initial_cluster: Option<String>,
        /// The member's peer URL, listened on and advertised (default
        /// http://127.0.0.1:P+1).
        #[arg(long, conflicts_with = "members")]
        peer_url: Option<String>,
        /// Restart a single surviving member's data as a new one-member
        /// cluster (etcd's --force-new-cluster).
        #[arg(long, conflicts_with_all = ["members", "join"])]
        force_new_cluster: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The proxy commands become gatewayd, before any runtime starts.
    let proxy = match &cli.command {
        Command::Gateway(proxy_commands::GatewayCommand::Start(a)) => {
            Some(Ok(proxy_commands::gateway_args(a)))
        }
        Command::GrpcProxy(proxy_commands::GrpcProxyCommand::Start(a)) => {
            Some(proxy_commands::grpc_proxy_args(a))
        }
        _ => None,
    };
    if let Some(args) = proxy {
        let e = args.and_then(proxy_commands::exec_gatewayd);
        if let Err(e) = e {
            eprintln!("triad: {e:#}");
        }
        return ExitCode::from(2);
    }
    // Data, logs and pid files are the user's alone, whatever the umask.
    common::member_dir::private_umask();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triad: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Ctl {
            action,
            daemon,
            data_dir,
            member,
        } => ctl::run(action, &daemon, &data_dir, member),
        Command::Snapshot(SnapshotCommand::Restore {
            file,
            data_dir,
            skip_hash_check,
        }) => snapshot::restore(&file, &data_dir, skip_hash_check),
        Command::Snapshot(SnapshotCommand::Status { file, write_out }) => {
            snapshot::status(&file, &write_out)
        }
        Command::Gateway(_) | Command::GrpcProxy(_) => Ok(()), // exec'd above
        Command::Up {
            data_dir,
            client_port,
            members,
            name,
            join,
            initial_cluster,
            peer_url,
            force_new_cluster,
        } => {
            let how = up::How {
                name,
                join,
                initial_cluster,
                peer_url,
                force_new_cluster,
            };
            rt.block_on(up::run(data_dir, client_port, members, how))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad: {e:#}");
            ExitCode::FAILURE
        }
    }
}
