//! `triad up`: one local member = storaged, raftd and gatewayd, each under
//! its own supervisor, sharing a data dir and a runtime dir for sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::supervisor::{self, DaemonSpec};
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::RangeRequest;

/// The daemons in start order; they are stopped in reverse.
const DAEMONS: [&str; 3] = ["storaged", "raftd", "gatewayd"];

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the triad binary")?;
    let dir = exe.parent().context("triad binary has no directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to triad (build the workspace first)",
        path.display()
    );
    Ok(path)
}

fn specs(data_dir: &Path, client_port: u16) -> anyhow::Result<Vec<DaemonSpec>> {
    let peer_port = client_port
        .checked_add(1)
        .context("--client-port too large")?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let dir = data_dir.to_string_lossy().to_string();
    let member = [
        "--name".to_string(),
        "default".to_string(),
        "--data-dir".to_string(),
        dir.clone(),
        "--initial-advertise-peer-urls".to_string(),
        peer_url.clone(),
    ];
    let own = |name: &str| -> Vec<String> {
        match name {
            "raftd" => vec!["--listen-peer-urls".into(), peer_url.clone()],
            "gatewayd" => vec![
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
            ],
            _ => vec![],
        }
    };
    DAEMONS
        .iter()
        .map(|&name| {
            Ok(DaemonSpec {
                name,
                program: sibling_binary(name)?,
                args: member.iter().cloned().chain(own(name)).collect(),
                log_file: data_dir.join("logs").join(format!("{name}.log")),
                pid_file: supervisor::pid_file(data_dir, name),
            })
        })
        .collect()
}

/// Wait until a linearizable read through the client port succeeds.
async fn wait_ready(client_port: u16) {
    let url = format!("http://127.0.0.1:{client_port}");
    loop {
        if let Ok(mut kv) = KvClient::connect(url.clone()).await {
            let probe = RangeRequest {
                key: b"health".to_vec(),
                ..Default::default()
            };
            if kv.range(probe).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(data_dir: PathBuf, client_port: u16) -> anyhow::Result<()> {
    for sub in ["logs", "pids"] {
        std::fs::create_dir_all(data_dir.join(sub))
            .with_context(|| format!("cannot create {}", data_dir.join(sub).display()))?;
    }
    let specs = specs(&data_dir, client_port)?;
    eprintln!(
        "triad: member data in {}, logs in {}",
        data_dir.display(),
        data_dir.join("logs").display()
    );

    let mut shutdown = Box::pin(common::lifecycle::shutdown_signal());
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for spec in specs {
        let (tx, rx) = watch::channel(false);
        stops.push(tx);
        tasks.push(tokio::spawn(supervisor::supervise(spec, rx)));
    }

    tokio::select! {
        _ = wait_ready(client_port) => {
            println!("ready 127.0.0.1:{client_port}");
        }
        _ = &mut shutdown => {
            stop_all(stops, tasks).await;
            return Ok(());
        }
    }
    shutdown.await;
    stop_all(stops, tasks).await;
    Ok(())
}

/// Stop gatewayd first (clients go), then raftd, then storaged.
async fn stop_all(stops: Vec<watch::Sender<bool>>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    for (stop, task) in stops.into_iter().zip(tasks).rev() {
        let _ = stop.send(true);
        let _ = task.await;
    }
    eprintln!("triad: stopped");
}
