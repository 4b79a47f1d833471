//! The Debian package and the systemd units: `systemd/build-deb` builds a
//! .deb of the daemons, units, default config and docs; its files,
//! conffiles and maintainer scripts are checked, the units pass
//! `systemd-analyze verify`, lintian accepts the package, a member runs
//! from the packaged binaries and default config, and gatewayd serves on a
//! socket systemd passes it (socket activation). Where the tests run as
//! root in CI the package is also installed on the machine: user, data
//! directory and permissions, enablement kept as the administrator left it,
//! data kept on remove, and data and enablement deleted on purge.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use triad_tests::{bin_dir, etcdctl, free_port_pair};

/// The install test changes /lib/systemd/system while the contents test
/// copies it: they take turns.
static SYSTEM_UNITS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_deb(out: &Path) -> PathBuf {
    let path = run(Command::new(repo().join("systemd/build-deb"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out)
        .arg("--fast"));
    PathBuf::from(path.trim())
}

const UNITS: [&str; 6] = [
    "triad-check.service",
    "triad-storaged.service",
    "triad-raftd.service",
    "triad-gatewayd.service",
    "triad-gatewayd.socket",
    "triad.target",
];

#[test]
fn package_contents_units_and_default_config() {
    let _turn = SYSTEM_UNITS.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(work.path());
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mut wanted: Vec<String> = ["storaged", "raftd", "gatewayd", "triad"]
        .iter()
        .map(|b| format!("-rwxr-xr-x root/root ./usr/bin/{b}"))
        .collect();
    wanted.extend(
        UNITS
            .iter()
            .map(|u| format!("-rw-r--r-- root/root ./lib/systemd/system/{u}")),
    );
    wanted.push("-rw-r--r-- root/root ./etc/triad/triad.toml".into());
    for doc in ["OPERATIONS.md", "copyright", "changelog.gz"] {
        wanted.push(format!("-rw-r--r-- root/root ./usr/share/doc/triad/{doc}"));
    }
    for w in &wanted {
        let (mode_owner, path) = w.rsplit_once(' ').expect("entry");
        assert!(
            listing.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 6 && format!("{} {}", f[0], f[1]) == mode_owner && f[5] == path
            }),
            "{w} missing from the package:\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: triad"), "{info}");
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&root));
    let conffiles = std::fs::read_to_string(root.join("DEBIAN/conffiles")).expect("conffiles");
    assert!(conffiles.lines().any(|l| l == "/etc/triad/triad.toml"));
    for script in ["postinst", "prerm", "postrm"] {
        let mode = std::fs::metadata(root.join("DEBIAN").join(script))
            .expect("maintainer script")
            .permissions()
            .mode();
        assert_eq!(mode & 0o755, 0o755, "{script} must be executable");
        run(Command::new("sh")
            .arg("-n")
            .arg(root.join("DEBIAN").join(script)));
    }

    // systemd-analyze verify against the packaged tree: it needs the
    // system's own units (sysinit.target, ...) under the same root.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let sys = root.join("usr/lib/systemd/system");
        std::fs::create_dir_all(&sys).expect("mkdir");
        run(Command::new("cp")
            .arg("-an")
            .arg("/lib/systemd/system/.")
            .arg(&sys));
        let units: Vec<PathBuf> = UNITS
            .iter()
            .map(|u| root.join("lib/systemd/system").join(u))
            .collect();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(&units)
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "verify: {err}"
        );
    } else {
        triad_tests::prerequisite_missing("systemd-analyze is not installed");
    }

    // A member from the packaged binaries and config (paths and ports
    // overridden by flags, which beat the file).
    let data = work.path().join("data");
    let port = free_port_pair();
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    let common = |cmd: &mut Command| {
        cmd.arg("--config-file")
            .arg(root.join("etc/triad/triad.toml"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--runtime-dir")
            .arg(data.join("run"))
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut children = Vec::new();
    for (daemon, extra) in [
        ("storaged", vec![]),
        (
            "raftd",
            vec!["--listen-peer-urls".to_string(), peer.clone()],
        ),
        (
            "gatewayd",
            vec![
                "--listen-client-urls".to_string(),
                client.clone(),
                "--advertise-client-urls".to_string(),
                client.clone(),
            ],
        ),
    ] {
        let mut cmd = Command::new(root.join("usr/bin").join(daemon));
        common(&mut cmd);
        cmd.args(extra);
        children.push(cmd.spawn().expect("start daemon"));
    }
    let ep = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut put = etcdctl(&ep, &["put", "packaged", "yes"]);
    while !put.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        put = etcdctl(&ep, &["put", "packaged", "yes"]);
    }
    for c in &mut children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for mut c in children {
        let _ = c.wait();
    }
    assert!(
        put.status.success(),
        "the packaged member did not serve: {}",
        String::from_utf8_lossy(&put.stderr)
    );
}

/// lintian accepts the package: no error, and no warning that the package
/// does not override with its reason (systemd/debian/lintian-overrides,
/// where each override follows a comment saying why).
#[test]
fn lintian_accepts_the_package() {
    if Command::new("lintian").arg("--version").output().is_err() {
        triad_tests::prerequisite_missing("lintian is not installed");
        return;
    }
    let overrides = std::fs::read_to_string(repo().join("systemd/debian/lintian-overrides"))
        .expect("lintian-overrides");
    let mut explained = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            explained = true;
        } else if line.trim().is_empty() {
            explained = false;
        } else {
            assert!(explained, "override without a reason above it: {line}");
        }
    }
    let work = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(work.path());
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-info"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lintian: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Overrides that no longer match anything are dropped, not kept.
    for stale in ["unused-override", "mismatched-override"] {
        assert!(!report.contains(stale), "{report}");
    }
    // Each man page names its binary and carries its usage.
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for b in ["storaged", "raftd", "gatewayd", "triad"] {
        let gz = root.join(format!("usr/share/man/man1/{b}.1.gz"));
        let text = run(Command::new("gzip").arg("-dc").arg(&gz));
        assert!(text.contains(&format!("{b} \\- triad")), "{b}: {text}");
        assert!(text.contains(&format!("Usage: {b}")), "{b}: {text}");
    }
}

/// gatewayd uses a listening socket passed by systemd (LISTEN_FDS) instead
/// of binding: `systemd-socket-activate` plays systemd here.
#[test]
fn gatewayd_serves_on_a_socket_passed_by_systemd() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        triad_tests::prerequisite_missing("systemd-socket-activate is not installed");
        return;
    }
    // A running member whose gatewayd is replaced by one on the activated
    // port (a member's data dir has one gatewayd at a time).
    let m = triad_tests::Member::start();
    m.pause_supervisor(true);
    let old = m.kill9("gatewayd");
    triad_tests::wait_dead(old);
    let port = free_port_pair();
    let url = format!("http://127.0.0.1:{port}");
    let mut activator = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(bin_dir().join("gatewayd"))
        .arg("--data-dir")
        .arg(m.data_dir())
        .arg("--runtime-dir")
        .arg(m.data_dir().join("run"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate");
    let ep = format!("127.0.0.1:{port}");
    let out = etcdctl(&ep, &["--command-timeout=20s", "put", "activated", "yes"]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = activator.wait();
    assert!(
        out.status.success(),
        "put through the activated socket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.pause_supervisor(false);
    m.wait_restarted("gatewayd", old);
    let got = etcdctl(&m.endpoint(), &["get", "activated", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "yes");
}

/// Installing on this machine changes it: only as root in CI (or when
/// TRIAD_TEST_INSTALL_DEB=1), and only when triad is not installed.
#[test]
fn install_remove_and_purge_on_this_machine() {
    let _turn = SYSTEM_UNITS.lock().unwrap_or_else(|e| e.into_inner());
    let allowed = std::env::var_os("CI").is_some()
        || std::env::var_os("TRIAD_TEST_INSTALL_DEB").is_some_and(|v| v == "1");
    if !allowed {
        eprintln!("not installing the package here (CI or TRIAD_TEST_INSTALL_DEB=1 only)");
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        triad_tests::prerequisite_missing("installing the package needs root");
        return;
    }
    let installed = Command::new("dpkg").args(["-s", "triad"]).output();
    if installed.is_ok_and(|o| o.status.success()) {
        triad_tests::prerequisite_missing("triad is already installed here: leaving it alone");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(work.path());
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let user = run(Command::new("getent").args(["passwd", "triad"]));
    assert!(user.contains("/var/lib/triad"), "{user}");
    let meta = std::fs::metadata("/var/lib/triad").expect("data dir");
    assert_eq!(meta.mode() & 0o777, 0o700);
    let uid = user.split(':').nth(2).and_then(|u| u.parse::<u32>().ok());
    assert_eq!(Some(meta.uid()), uid, "the data dir belongs to triad");
    assert!(Path::new("/usr/bin/gatewayd").exists());
    assert!(Path::new("/lib/systemd/system/triad.target").exists());
    // A first install enables the member's units.
    let enabled = |link: &str| Path::new("/etc/systemd/system").join(link).exists();
    const TARGET: &str = "multi-user.target.wants/triad.target";
    const RAFTD: &str = "triad.target.wants/triad-raftd.service";
    assert!(enabled(TARGET) && enabled(RAFTD), "a first install enables");
    // What the administrator disabled stays disabled through a reinstall
    // (an upgrade runs the same postinst).
    run(Command::new("systemctl").args(["disable", "triad.target"]));
    assert!(!enabled(TARGET));
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(!enabled(TARGET), "a reinstall re-enabled a disabled unit");
    assert!(enabled(RAFTD), "units left enabled stay enabled");
    std::fs::write("/var/lib/triad/marker", b"data").expect("write data");
    run(Command::new("dpkg").args(["-r", "triad"]));
    assert!(!Path::new("/usr/bin/gatewayd").exists());
    assert!(
        Path::new("/var/lib/triad/marker").exists(),
        "remove keeps the data"
    );
    run(Command::new("dpkg").args(["-P", "triad"]));
    // Purge leaves no enablement link, mask or state behind.
    let state = [
        "/etc/systemd/system",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
    ];
    let leftovers = run(Command::new("find")
        .args(state.iter().filter(|d| Path::new(d).exists()))
        .args(["-name", "triad*"]));
    assert!(leftovers.trim().is_empty(), "left after purge: {leftovers}");
    assert!(
        !Path::new("/var/lib/triad").exists(),
        "purge deletes the data"
    );
    assert!(!Path::new("/etc/triad").exists());
    let gone = Command::new("getent").args(["passwd", "triad"]).output();
    assert!(
        gone.is_ok_and(|o| !o.status.success()),
        "purge removes the user"
    );
}
