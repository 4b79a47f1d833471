//! The power-cut harness that triad and etcd both run, for a side-by-side
//! comparison: three members, each on a power-loss disk; writers putting
//! unique keys through every member; power cuts of one member, of every
//! member at once, and with torn writes, in a seeded order. It counts what
//! a user sees: acknowledged writes missing afterwards, and members that
//! did not boot again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::nemesis::FaultKind;
use crate::powerloss::MemberDisks;
use crate::{free_port_pair, XorShift};

/// A three-member cluster whose members can lose power.
pub trait PowerTarget {
    fn endpoints(&self) -> Vec<String>;
    /// kill -9 every process of the members at `which`, cut their disks
    /// (their last writes torn when `torn`), and start them again.
    fn power_cycle(&mut self, which: &[usize], torn: bool);
    /// The tail of member i's log, for a member that did not boot.
    fn log_tail(&self, i: usize) -> String;
}

/// What one run counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub cuts: BTreeMap<FaultKind, usize>,
    pub acknowledged: usize,
    /// None when no quorum was left to read them back.
    pub lost: Option<usize>,
    /// Why each member that did not boot stopped (its log's last lines).
    pub failures: Vec<String>,
    pub boot_failures: usize,
    /// The run stopped early: a quorum no longer booted.
    pub stopped_early: bool,
}

type Acks = Arc<Mutex<Vec<(String, i64)>>>;

/// Whether member `endpoint` answers a serializable read within `limit`.
async fn serves(endpoint: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(2));
        if let Ok(mut c) = etcd_client::Client::connect([endpoint], Some(opts)).await {
            let get = etcd_client::GetOptions::new().with_serializable();
            if c.get("probe", Some(get)).await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `cuts` power cuts, one every `every`, under `writers` writers.
pub async fn run(target: &mut dyn PowerTarget, cuts: usize, every: Duration, seed: u64) -> Tally {
    let endpoints = target.endpoints();
    let acks: Acks = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acks, stop) = (acks.clone(), stop.clone());
        // Each writer talks to one member, as etcdctl with one endpoint does.
        let endpoint = endpoints[w % endpoints.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let opts = || {
                etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(3))
            };
            let mut client = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.is_none() {
                    client = etcd_client::Client::connect([endpoint.as_str()], Some(opts()))
                        .await
                        .ok();
                }
                let Some(c) = client.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                seq += 1;
                let key = format!("pc/{w}/{seq:08}");
                match c.put(key.clone(), "x", None).await {
                    Ok(r) => {
                        let rev = r.header().map_or(0, |h| h.revision());
                        if let Ok(mut a) = acks.lock() {
                            a.push((key, rev));
                        }
                    }
                    Err(_) => {
                        client = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let mut tally = Tally::default();
    let mut rng = XorShift(seed | 1);
    let mut alive = vec![true; endpoints.len()];
    tokio::time::sleep(every).await;
    for _ in 0..cuts {
        let kind = FaultKind::POWER[(rng.next_u64() % 3) as usize];
        let up: Vec<usize> = (0..alive.len()).filter(|&i| alive[i]).collect();
        let which = if kind == FaultKind::PowerLossAll {
            up.clone()
        } else {
            vec![up[(rng.next_u64() % up.len() as u64) as usize]]
        };
        let torn = kind == FaultKind::TornWrite;
        tokio::task::block_in_place(|| target.power_cycle(&which, torn));
        *tally.cuts.entry(kind).or_default() += 1;
        for &i in &which {
            if !serves(&endpoints[i], Duration::from_secs(30)).await {
                tally.boot_failures += 1;
                tally.failures.push(target.log_tail(i));
                alive[i] = false;
            }
        }
        if alive.iter().filter(|a| **a).count() * 2 <= alive.len() {
            tally.stopped_early = true;
            break;
        }
        tokio::time::sleep(every).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acks.lock().map(|a| a.clone()).unwrap_or_default();
    tally.acknowledged = acked.len();
    tally.lost = count_lost(&endpoints, &alive, &acked).await;
    tally
}

/// Acknowledged writes not found (at their revision) on a member that
/// still runs; None when none can be read (no quorum).
async fn count_lost(
    endpoints: &[String],
    alive: &[bool],
    acked: &[(String, i64)],
) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for (ep, _) in endpoints.iter().zip(alive).filter(|(_, up)| **up) {
            let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else {
                continue;
            };
            let Ok(all) = c
                .get("pc/", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
            else {
                continue;
            };
            let found: HashMap<&[u8], i64> = all
                .kvs()
                .iter()
                .map(|kv| (kv.key(), kv.mod_revision()))
                .collect();
            return Some(
                acked
                    .iter()
                    .filter(|(k, rev)| found.get(k.as_bytes()) != Some(rev))
                    .count(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// triad under the harness: a `Cluster` on member disks.
pub struct TriadTarget<'a> {
    pub cluster: &'a Cluster,
    pub disks: &'a MemberDisks,
}

impl PowerTarget for TriadTarget<'_> {
    fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    fn power_cycle(&mut self, which: &[usize], torn: bool) {
        self.cluster.power_cycle(which, |name| {
            self.disks.cut(name, torn);
        });
    }

    fn log_tail(&self, i: usize) -> String {
        self.cluster.logs(i)
    }
}

/// Debian's etcd as three processes, member i's data dir on disk `m<i>`.
pub struct EtcdTarget<'a> {
    disks: &'a MemberDisks,
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl<'a> EtcdTarget<'a> {
    /// Start the members on `disks` mounted at `dir/m<i>`; None where the
    /// etcd binary is missing.
    pub fn start(dir: &Path, disks: &'a MemberDisks) -> Option<EtcdTarget<'a>> {
        Command::new("etcd").arg("--version").output().ok()?;
        let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
        let mut t = EtcdTarget {
            disks,
            dir: dir.to_path_buf(),
            ports,
            children: (0..3).map(|_| None).collect(),
        };
        for i in 0..3 {
            t.launch(i);
        }
        Some(t)
    }

    fn launch(&mut self, i: usize) {
        let initial: Vec<String> = (0..3)
            .map(|j| format!("m{j}=http://127.0.0.1:{}", self.ports[j] + 1))
            .collect();
        let member = self.dir.join(format!("m{i}"));
        std::fs::create_dir_all(member.join("logs")).expect("etcd's log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(member.join("logs").join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .arg(format!("--name=m{i}"))
            .arg(format!("--data-dir={}", member.join("data").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                self.ports[i]
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{}",
                self.ports[i]
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                self.ports[i] + 1
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                self.ports[i] + 1
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=power-cuts")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.children[i] = Some(child);
    }
}

impl PowerTarget for EtcdTarget<'_> {
    fn endpoints(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    fn log_tail(&self, i: usize) -> String {
        let log = self.dir.join(format!("m{i}/logs/etcd.log"));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn power_cycle(&mut self, which: &[usize], torn: bool) {
        for &i in which {
            if let Some(mut c) = self.children[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for &i in which {
            self.disks.cut(&format!("m{i}"), torn);
        }
        for &i in which {
            self.launch(i);
        }
    }
}

impl Drop for EtcdTarget<'_> {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Tally {
    /// One row of ROBUSTNESS.md's comparison table.
    pub fn row(&self, system: &str) -> String {
        let n = |k| self.cuts.get(&k).copied().unwrap_or(0);
        format!(
            "| {system} | {} | {} | {} | {} | {} | {} | {}{} |",
            n(FaultKind::PowerLoss),
            n(FaultKind::PowerLossAll),
            n(FaultKind::TornWrite),
            self.acknowledged,
            self.lost
                .map_or("unknown (no quorum to read)".to_string(), |l| l.to_string()),
            self.boot_failures,
            self.cuts.values().sum::<usize>(),
            if self.stopped_early {
                " (stopped: no quorum booted)"
            } else {
                ""
            }
        )
    }
}
