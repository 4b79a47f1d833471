//! triad-bench: etcd v3 workloads over gRPC against any server that speaks
//! the API (triad or etcd), one JSON line of results per run, and a
//! markdown table of such lines. Loopback only: endpoints are host:port
//! on 127.0.0.0/8, and every run stops by itself (a duration or a count).

mod failover;
mod server_usage;
mod stats;
mod table;
mod workloads;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "triad-bench", about = "etcd v3 workloads over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every workload takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Client endpoints, host:port, comma separated (loopback only).
    #[arg(long)]
    pub endpoints: String,
    /// HTTP/2 connections, spread over the endpoints in turn.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds to run (when --total is not given).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests to make in all, instead of a duration.
    #[arg(long)]
    pub total: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys written or read.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Keys in order (0, 1, 2, ...) instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Names this run in the results (e.g. etcd-3/put-1).
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Print only the JSON line (no human-readable line on stderr).
    #[arg(long)]
    pub json_only: bool,
    /// Requests per second from all clients together, paced, instead of
    /// each client sending its next request as soon as the last returns.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The server processes (comma-separated pids) whose CPU time, bytes
    /// written and resident memory the run reports.
    #[arg(long)]
    pub server_pids: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Puts.
    Put {
        #[command(flatten)]
        common: Common,
    },
    /// Single-key gets (linearizable unless --serializable).
    Range {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        serializable: bool,
        /// Read the keys as they are instead of writing every key first.
        #[arg(long)]
        no_prefill: bool,
    },
    /// Gets and puts mixed, --read-ratio of them gets.
    Mixed {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 0.9)]
        read_ratio: f64,
        #[arg(long)]
        no_prefill: bool,
    },
    /// Transactions of --txn-ops puts each (distinct keys).
    TxnPut {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Lease keepalives, one lease per client on its own stream.
    LeaseKeepalive {
        #[command(flatten)]
        common: Common,
    },
    /// Time from a put to its event on every watcher.
    WatchLatency {
        #[command(flatten)]
        common: Common,
        /// Watchers, spread over the connections.
        #[arg(long, default_value_t = 16)]
        watchers: usize,
        /// Puts per second of the single writer (on the first endpoint).
        #[arg(long, default_value_t = 100)]
        put_rate: u64,
    },
    /// One writer through a fault (a leader killed or frozen): puts one
    /// at a time over one connection per endpoint, moving to the next
    /// endpoint on an error or a timeout; runs --fault (sh -c) after
    /// --fault-after seconds and keeps writing until --duration. Reports
    /// outage_ms: from the fault command's start to the answer of the
    /// first successful put sent after the command exited (--conns and
    /// --clients are ignored).
    Failover {
        #[command(flatten)]
        common: Common,
        /// The shell command that makes the fault and exits, e.g.
        /// "kill -KILL 1234".
        #[arg(long)]
        fault: String,
        /// Seconds of writing before the fault starts.
        #[arg(long, default_value_t = 3.0)]
        fault_after: f64,
        /// How long one put may take before the writer gives up on it, ms.
        #[arg(long, default_value_t = 500)]
        put_timeout_ms: u64,
    },
    /// No requests: what idle servers spend (with --server-pids).
    Idle {
        #[command(flatten)]
        common: Common,
    },
    /// A markdown table of result lines; with --ratio BASE OTHER, a second
    /// table of OTHER/BASE by case (labels are PREFIX/CASE).
    Table {
        #[arg(long, num_args = 2, value_names = ["BASE", "OTHER"])]
        ratio: Option<Vec<String>>,
        files: Vec<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Table { ratio, files } = &cli.command {
        return match table::print(files, ratio.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("triad-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triad-bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(workloads::run(cli.command)) {
        Ok(result) => {
            println!("{}", result.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("triad-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
