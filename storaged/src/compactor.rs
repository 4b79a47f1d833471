//! Physical compaction in the background: after a Compact is applied, walk
//! the revision log from the last finished point up to the compacted
//! revision in bounded batches, removing every revision that a newer one at
//! or below the compacted revision supersedes (and tombstones that are the
//! newest). Progress is stored with each batch, so a restart resumes.

use std::sync::Arc;

use fjall::Readable;

use crate::keys::{self, Rev};
use crate::schema::META_COMPACT_DONE;
use crate::store::Store;
use crate::StoreError;

/// Revisions examined per write transaction (`batch`) bound how long an
/// apply waits behind one.
pub async fn run(store: Arc<Store>, batch: usize) {
    let mut target = store.compact_target.subscribe();
    // When the compaction under way began (etcd's total duration).
    let mut began: Option<std::time::Instant> = None;
    loop {
        let goal = *target.borrow_and_update();
        let done = *store.compact_done.borrow();
        if goal > done {
            let s = store.clone();
            let started = *began.get_or_insert_with(std::time::Instant::now);
            match tokio::task::spawn_blocking(move || compact_batch(&s, done, goal, batch)).await {
                Ok(Ok(reached)) => {
                    if reached >= goal {
                        let ms = started.elapsed().as_secs_f64() * 1000.0;
                        crate::metrics::DB_COMPACTION_TOTAL.observe_value(ms);
                        began = None;
                    }
                    store.compact_done.send_replace(reached);
                    continue;
                }
                Ok(Err(e)) if crate::fatal::report(&e) => {
                    tracing::error!(error = %e, "compaction stopped: the store failed");
                    return;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "compaction batch failed; retrying"),
                Err(e) => tracing::error!(error = %e, "compaction task failed; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        if target.changed().await.is_err() {
            return;
        }
    }
}

/// Process revisions in (done, goal]; returns how far it got.
fn compact_batch(store: &Store, done: i64, goal: i64, batch: usize) -> Result<i64, StoreError> {
    let started = std::time::Instant::now();
    let mut tx = store.db.write_tx();
    let lo = keys::rev_key(Rev {
        main: done + 1,
        sub: 0,
    });
    let hi = keys::rev_key(Rev {
        main: goal + 1,
        sub: 0,
    });
    let mut last_main = done;
    let mut stopped_early = false;
    let mut victims: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (seen, g) in tx.range(&store.ks.revs, lo..hi).enumerate() {
        let (rk, esc) = g.into_inner()?;
        let rev = keys::parse_rev_key(&rk).ok_or(StoreError::CorruptKey)?;
        // Stop only between main revisions, so progress is a whole revision.
        if seen >= batch && rev.main != last_main {
            stopped_early = true;
            break;
        }
        last_main = rev.main;
        // The newest revision of this key at or below the goal decides.
        let newest_lo = keys::index_key(
            &esc,
            Rev {
                main: goal,
                sub: -1,
            },
        );
        let key_hi = keys::index_key(&esc, Rev { main: 0, sub: 0 });
        let Some(first) = tx.range(&store.ks.index, newest_lo..=key_hi.clone()).next() else {
            continue;
        };
        let (nk, nv) = first.into_inner()?;
        let (_, newest) = keys::split_index_key(&nk).ok_or(StoreError::CorruptKey)?;
        if newest != rev {
            continue; // superseded; the newest one's visit removes it
        }
        for old in tx.range(&store.ks.index, nk.to_vec()..=key_hi).skip(1) {
            let (ok, _) = old.into_inner()?;
            let (_, orev) = keys::split_index_key(&ok).ok_or(StoreError::CorruptKey)?;
            victims.push((ok.to_vec(), keys::rev_key(orev).to_vec()));
        }
        if crate::record::Record::is_tombstone(&nv) {
            victims.push((nk.to_vec(), rk.to_vec()));
        }
    }
    let reached = if stopped_early { last_main } else { goal };
    let removed = victims.len() as u64;
    for (ik, rk) in victims {
        tx.remove(&store.ks.index, ik);
        tx.remove(&store.ks.revs, rk);
    }
    tx.insert(&store.ks.meta, META_COMPACT_DONE, reached.to_be_bytes());
    tx.commit()?;
    crate::metrics::DB_COMPACTION_KEYS.add(removed);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::metrics::DB_COMPACTION_PAUSE.observe_value(ms);
    Ok(reached)
}
