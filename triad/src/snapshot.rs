//! `triad snapshot`: offline tools for backup files saved with `etcdctl
//! snapshot save` against a triad member (etcdutl's counterparts).

use std::path::Path;

use anyhow::Context;

/// Restore a backup into a new member's data directory, for a new
/// cluster: the member's storaged starts with the backup's data and
/// revisions; raft state starts afresh from `--initial-cluster` when the
/// member first starts (as `etcdctl snapshot restore` prepares a member).
pub fn restore(file: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let live = data_dir.join("storaged");
    for sub in ["storaged", "storaged.snapshot", "raftd"] {
        anyhow::ensure!(
            !data_dir.join(sub).exists(),
            "data-dir {:?} exists",
            data_dir.display().to_string()
        );
    }
    common::backup::verify(file).with_context(|| format!("cannot restore {}", file.display()))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut staging = storaged::snapshot::Staging::create(&live)?;
    for chunk in common::backup::chunks(file)? {
        staging.write(chunk?)?;
    }
    staging.forget_raft_state()?;
    let status = staging.finish()?;
    storaged::snapshot::mark_for_activation(&live)?;
    println!(
        "restored snapshot {} into {} (revision {})",
        file.display(),
        data_dir.display(),
        status.revision
    );
    Ok(())
}

/// What a backup holds: etcdctl snapshot status's fields.
pub fn status(file: &Path) -> anyhow::Result<()> {
    common::backup::verify(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut revision = 0;
    let mut keys = 0u64;
    for chunk in common::backup::chunks(file)? {
        let chunk = chunk?;
        if let Some(s) = &chunk.status {
            revision = s.revision;
        }
        // Keyspace 1 is the revision log: one entry per stored revision.
        keys += chunk.entries.iter().filter(|e| e.keyspace == 1).count() as u64;
    }
    let size = std::fs::metadata(file)?.len();
    println!("revision: {revision}, stored revisions: {keys}, size: {size} bytes");
    Ok(())
}
