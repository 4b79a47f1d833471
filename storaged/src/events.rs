//! Watch events: built as changes are applied (published after each batch
//! commits) and rebuilt from the revision log for history reads. Either way
//! one `EventBatch` per revision, events in change order, prev_kv filled.

use fjall::Readable;

use crate::keys::{self, Rev};
use crate::read;
use crate::record::Record;
use crate::schema::Keyspaces;
use crate::StoreError;
use common::proto::mvccpb::{event::EventType, Event, KeyValue};
use common::proto::storage::EventBatch;

/// The event of storing `rec` for `key` at `rev`. A delete's kv carries only
/// the key and the revision, as etcd's do.
pub fn event(key: Vec<u8>, rev: Rev, rec: Record, prev_kv: Option<KeyValue>) -> Event {
    let (kind, kv) = if rec.tombstone {
        (
            EventType::Delete,
            KeyValue {
                key,
                mod_revision: rev.main,
                ..Default::default()
            },
        )
    } else {
        (EventType::Put, rec.into_kv(key, rev))
    };
    Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv,
    }
}

/// Events of revisions `from..=to`, at most `max_revs` revisions of them.
pub fn history<R: Readable>(
    r: &R,
    ks: &Keyspaces,
    from: i64,
    to: i64,
    max_revs: usize,
) -> Result<Vec<EventBatch>, StoreError> {
    let lo = keys::rev_key(Rev { main: from, sub: 0 });
    let hi = keys::rev_key(Rev {
        main: to.saturating_add(1),
        sub: 0,
    });
    let mut batches: Vec<EventBatch> = Vec::new();
    for g in r.range(&ks.revs, lo..hi) {
        let (rk, esc) = g.into_inner()?;
        let rev = keys::parse_rev_key(&rk).ok_or(StoreError::CorruptKey)?;
        if batches.last().is_none_or(|b| b.revision != rev.main) {
            if batches.len() == max_revs {
                break;
            }
            batches.push(EventBatch {
                revision: rev.main,
                events: Vec::new(),
                compact_revision: 0,
            });
        }
        let value = r
            .get(&ks.index, keys::index_key(&esc, rev))?
            .ok_or(StoreError::CorruptKey)?;
        let key = keys::unescape(&esc).ok_or(StoreError::CorruptKey)?;
        let prev_kv = match read::latest(r, ks.index.as_ref(), &key, rev.main - 1)? {
            Some((prev_rev, prev)) if !prev.tombstone => Some(prev.into_kv(key.clone(), prev_rev)),
            _ => None,
        };
        if let Some(b) = batches.last_mut() {
            b.events
                .push(event(key, rev, Record::decode(&value)?, prev_kv));
        }
    }
    Ok(batches)
}
