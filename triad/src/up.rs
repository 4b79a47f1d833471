//! `triad up`: one local member = storaged, raftd and gatewayd, each under
//! its own supervisor, sharing a data dir and a runtime dir for sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::supervisor::{self, DaemonSpec, Event};
use common::errors::EtcdError;
use common::proto::etcdserverpb::cluster_client::ClusterClient;
use common::proto::etcdserverpb::MemberListRequest;

/// The daemons in start order; they are stopped in reverse.
const DAEMONS: [&str; 3] = ["storaged", "raftd", "gatewayd"];

pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
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

/// One member of the local cluster: where it lives and its ports.
struct LocalMember {
    name: String,
    data_dir: PathBuf,
    client_port: u16,
    /// Set by `--peer-url`; otherwise loopback, one above the client port.
    peer_url: Option<String>,
}

impl LocalMember {
    fn peer_url(&self) -> String {
        if let Some(url) = &self.peer_url {
            return url.clone();
        }
        // https when the daemons get peer TLS settings from the environment.
        let scheme = if std::env::var_os("TRIAD_PEER_CERT_FILE").is_some()
            || env_on("TRIAD_PEER_AUTO_TLS")
            || env_on("ETCD_PEER_AUTO_TLS")
        {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port + 1)
    }
    fn client_url(&self) -> String {
        client_url(self.client_port)
    }
}

/// Member i: client port P + 10000*i, peer port one above; a single member
/// keeps the data dir itself, cluster members get DIR/m<i>.
fn local_members(
    data_dir: &Path,
    client_port: u16,
    count: u16,
) -> anyhow::Result<Vec<LocalMember>> {
    anyhow::ensure!(count >= 1, "--members must be at least 1");
    (0..count)
        .map(|i| {
            let port = u32::from(client_port) + 10_000 * u32::from(i);
            let port = u16::try_from(port + 1)
                .ok()
                .and_then(|_| u16::try_from(port).ok())
                .context("--client-port too large for that many members")?;
            Ok(LocalMember {
                name: if count == 1 {
                    "default".into()
                } else {
                    format!("m{i}")
                },
                data_dir: if count == 1 {
                    data_dir.to_path_buf()
                } else {
                    data_dir.join(format!("m{i}"))
                },
                client_port: port,
                peer_url: None,
            })
        })
        .collect()
}

/// How a single member starts: its name, joining an existing cluster, or
/// forced into a new one-member cluster.
#[derive(Default)]
pub struct How {
    pub name: Option<String>,
    pub join: Option<String>,
    /// A member of a new cluster started elsewhere: the whole cluster.
    pub initial_cluster: Option<String>,
    pub peer_url: Option<String>,
    pub force_new_cluster: bool,
}

/// The token of a cluster `triad up` creates itself: the one it drew
/// for this data dir before, else a new random one (kept in DIR/cluster-token),
/// so two clusters started by `triad up` never share a cluster ID. An
/// explicit TRIAD_INITIAL_CLUSTER_TOKEN wins (None: the daemons read it).
fn own_cluster_token(data_dir: &Path) -> anyhow::Result<Option<String>> {
    if std::env::var_os("TRIAD_INITIAL_CLUSTER_TOKEN").is_some() {
        return Ok(None);
    }
    let path = data_dir.join("cluster-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(Some(t.trim().to_string())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot draw a cluster token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("triad-{token}");
    common::durable::write_file(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(token))
}

fn specs(
    index: usize,
    m: &LocalMember,
    initial_cluster: &str,
    token: Option<&str>,
    how: &How,
) -> anyhow::Result<Vec<DaemonSpec>> {
    let dir = m.data_dir.to_string_lossy().to_string();
    let (peer_url, client_url) = (m.peer_url(), m.client_url());
    let mut member = vec![
        "--name".to_string(),
        m.name.clone(),
        "--data-dir".to_string(),
        dir,
        "--initial-advertise-peer-urls".to_string(),
        peer_url.clone(),
    ];
    // With etcd's --discovery-srv or a discovery service in the
    // environment, DNS or that service names the initial cluster instead.
    let discovered = [
        "TRIAD_DISCOVERY_SRV",
        "ETCD_DISCOVERY_SRV",
        "TRIAD_DISCOVERY_ENDPOINTS",
        "ETCD_DISCOVERY_ENDPOINTS",
        "TRIAD_DISCOVERY",
        "ETCD_DISCOVERY",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !discovered {
        member.extend(["--initial-cluster".to_string(), initial_cluster.to_string()]);
    }
    if let Some(token) = token {
        member.extend(["--initial-cluster-token".to_string(), token.to_string()]);
    }
    let own = |name: &str| -> Vec<String> {
        match name {
            "raftd" => {
                let mut args = vec!["--listen-peer-urls".into(), peer_url.clone()];
                if how.join.is_some() {
                    args.extend(["--initial-cluster-state".into(), "existing".into()]);
                }
                if how.force_new_cluster {
                    args.push("--force-new-cluster".into());
                }
                args
            }
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
                member: index,
                program: sibling_binary(name)?,
                args: member.iter().cloned().chain(own(name)).collect(),
                log_file: m.data_dir.join("logs").join(format!("{name}.log")),
                pid_file: supervisor::pid_file(&m.data_dir, name),
                notify_socket: m.data_dir.join("pids").join(format!("{name}.notify")),
            })
        })
        .collect()
}

/// The client TLS files when the daemons get them from the environment
/// (TRIAD_CERT_FILE, ...): then members serve https.
fn client_tls() -> Option<common::tls::TlsFiles> {
    let path = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let files = common::tls::TlsFiles {
        cert: path("TRIAD_CERT_FILE"),
        key: path("TRIAD_KEY_FILE"),
        trusted_ca: path("TRIAD_TRUSTED_CA_FILE"),
        ..Default::default()
    };
    files.enabled().then_some(files)
}

/// etcd's `--auto-tls` in the environment (and no certificate): members
/// serve https with a self-signed certificate each makes in its data dir.
fn auto_tls() -> bool {
    client_tls().is_none() && (env_on("TRIAD_AUTO_TLS") || env_on("ETCD_AUTO_TLS"))
}

/// Whether the environment turns a boolean flag on (Go's true spellings).
fn env_on(var: &str) -> bool {
    std::env::var(var)
        .is_ok_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

fn client_url(port: u16) -> String {
    let scheme = if client_tls().is_some() || auto_tls() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://127.0.0.1:{port}")
}

/// Wait until the member has published its client URL to the cluster:
/// a membership change committed by a quorum and applied here, so the
/// member serves (etcd is ready once it has published itself). A learner
/// is ready once it answers (it refuses membership calls, as etcd's do).
async fn wait_ready(client_port: u16, data_dir: &std::path::Path) {
    let url = client_url(client_port);
    // Under TLS, trust the configured CA and present the member's own
    // certificate (client certificate auth may be on); under auto TLS,
    // trust the member's self-signed certificate once it is made.
    let mut tls = client_tls().map(|t| t.client());
    loop {
        if auto_tls() && tls.is_none() {
            let cert = data_dir.join("fixtures").join("client").join("cert.pem");
            if cert.exists() {
                let files = common::tls::TlsFiles {
                    trusted_ca: Some(cert),
                    ..Default::default()
                };
                tls = Some(files.client());
            }
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone());
        let endpoint = match (endpoint, &tls) {
            (Ok(e), Some(Ok(t))) => e.tls_config(t.clone()),
            (e, _) => e,
        };
        if let Ok(endpoint) = endpoint {
            let mut cluster = ClusterClient::new(endpoint.connect_lazy());
            let list = cluster
                .member_list(MemberListRequest {
                    linearizable: false,
                })
                .await;
            let ready = match list {
                Ok(l) => l
                    .into_inner()
                    .members
                    .iter()
                    .any(|m| m.client_ur_ls.contains(&url)),
                // A learner serves status and serializable reads only.
                Err(s) => s.message() == EtcdError::NotSupportedForLearner.to_string(),
            };
            if ready {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `count` local members, or one member as `how` says.
pub async fn run(data_dir: PathBuf, client_port: u16, count: u16, how: How) -> anyhow::Result<()> {
    // An etcd YAML file would make the daemons ignore the flags `triad up`
    // gives each member (as etcd ignores them): refuse it up front.
    let args = [std::ffi::OsString::from("triad")];
    if let Some(path) = common::config::config_file_path(&args) {
        if let common::config::ConfigFile::Yaml(_) = common::config::ConfigFile::load(Some(&path))?
        {
            anyhow::bail!(
                "{} is an etcd YAML config file, which sets what triad up sets for each member; \
                 start the daemons with it directly (--config-file), or use triad's TOML",
                path.display()
            );
        }
    }
    let mut members = local_members(&data_dir, client_port, count)?;
    if let Some(name) = &how.name {
        members[0].name = name.clone();
    }
    if let Some(url) = &how.peer_url {
        members[0].peer_url = Some(url.clone());
    }
    let initial_cluster = match how.join.as_ref().or(how.initial_cluster.as_ref()) {
        Some(cluster) => cluster.clone(),
        None => members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(","),
    };
    // One owner per member: a second `triad up` on the same data dir stops
    // here, before it writes a pid file or starts a daemon.
    let mut claims = Vec::new();
    for m in &members {
        claims.push(common::member_dir::claim(&m.data_dir, "triad-up")?);
    }
    // A cluster of triad up's own gets a token of its own; members of a
    // cluster started elsewhere take the operator's.
    let own_cluster = how.join.is_none() && how.initial_cluster.is_none();
    let token = if own_cluster {
        own_cluster_token(&data_dir)?
    } else {
        None
    };
    // Daemons by start order, member by member within each kind.
    let mut by_kind: Vec<Vec<DaemonSpec>> = DAEMONS.iter().map(|_| Vec::new()).collect();
    for (i, m) in members.iter().enumerate() {
        for sub in ["logs", "pids"] {
            common::member_dir::create_private(&m.data_dir.join(sub))
                .with_context(|| format!("cannot create {}", m.data_dir.join(sub).display()))?;
        }
        let specs = specs(i, m, &initial_cluster, token.as_deref(), &how)?;
        for (kind, spec) in specs.into_iter().enumerate() {
            by_kind[kind].push(spec);
        }
    }
    eprintln!(
        "triad: {} member(s), data and logs under {}",
        members.len(),
        data_dir.display()
    );

    let mut shutdown = Box::pin(common::lifecycle::shutdown_signal());
    let (reports, mut report) = mpsc::unbounded_channel();
    let mut kinds = Vec::new();
    for specs in by_kind {
        let mut stops = Vec::new();
        for spec in specs {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(supervisor::supervise(spec, rx, reports.clone()));
            stops.push((tx, task));
        }
        kinds.push(stops);
    }

    // Ready once every member's own gatewayd says it serves and every
    // member has published itself (another server answering on a client
    // port does not count).
    let mut published = Box::pin(futures::future::join_all(
        members
            .iter()
            .map(|m| wait_ready(m.client_port, &m.data_dir)),
    ));
    let mut all_published = false;
    let mut serving = vec![false; members.len()];
    let mut removed = vec![false; members.len()];
    let mut announced = false;
    loop {
        if !announced && all_published && serving.iter().all(|s| *s) {
            let endpoints: Vec<String> = members
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.client_port))
                .collect();
            println!("ready {}", endpoints.join(","));
            announced = true;
        }
        tokio::select! {
            _ = &mut published, if !all_published => all_published = true,
            Some(r) = report.recv() => match r.event {
                Event::Ready => {
                    if r.daemon == "gatewayd" {
                        serving[r.member] = true;
                    }
                }
                Event::GaveUp(why) => {
                    stop_all(kinds).await;
                    drop(claims);
                    let name = &members[r.member].name;
                    anyhow::bail!("{} of member {name} cannot run:\n{why}", r.daemon);
                }
                Event::Removed => {
                    let name = &members[r.member].name;
                    if !removed[r.member] {
                        removed[r.member] = true;
                        eprintln!("triad: member {name} was removed from the cluster; stopping it");
                        stop_member(&mut kinds, r.member).await;
                    }
                    if removed.iter().all(|r| *r) {
                        drop(claims);
                        anyhow::bail!("member {name} was removed from the cluster");
                    }
                }
            },
            _ = &mut shutdown => {
                stop_all(kinds).await;
                return Ok(());
            }
        }
    }
}

type Supervised = Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>;

/// Stop one member's daemons (gatewayd, raftd, storaged), the others
/// supervised on.
async fn stop_member(kinds: &mut [Supervised], member: usize) {
    for kind in kinds.iter_mut().rev() {
        if let Some((stop, task)) = kind.get_mut(member) {
            let _ = stop.send(true);
            // Awaited here to its end, so stop_all awaits a finished stand-in.
            let done = std::mem::replace(task, tokio::spawn(async {}));
            let _ = done.await;
        }
    }
}

/// Stop every gatewayd first (clients go), then raftd, then storaged.
async fn stop_all(kinds: Vec<Supervised>) {
    for kind in kinds.into_iter().rev() {
        for (stop, _) in &kind {
            let _ = stop.send(true);
        }
        for (_, task) in kind {
            let _ = task.await;
        }
    }
    eprintln!("triad: stopped");
}
