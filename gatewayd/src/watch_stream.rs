//! etcd's watch stream rules that the member's Watch service and the L7
//! proxy's both keep: the refusal of a duplicate watch ID and fragmenting
//! a response larger than the request limit.

use prost::Message;

use common::proto::etcdserverpb::WatchResponse;

/// etcd's cancel reason for a create reusing a live watch ID.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a watch whose range holds no key (key >= end).
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// etcd's sendFragments: split a response larger than the request limit
/// into parts (all but the last marked `fragment`), when the watcher asked.
pub fn fragments(r: WatchResponse, fragment: bool, max_bytes: usize) -> Vec<WatchResponse> {
    if !fragment || r.encoded_len() < max_bytes || r.events.len() < 2 {
        return vec![r];
    }
    let mut parts = Vec::new();
    let mut rest = r.events.clone().into_iter().peekable();
    let template = WatchResponse {
        events: Vec::new(),
        ..r
    };
    while rest.peek().is_some() {
        let mut part = WatchResponse {
            fragment: true,
            ..template.clone()
        };
        while let Some(e) = rest.peek() {
            part.events.push(e.clone());
            if part.events.len() > 1 && part.encoded_len() >= max_bytes {
                part.events.pop();
                break;
            }
            rest.next();
        }
        if rest.peek().is_none() {
            part.fragment = false;
        }
        parts.push(part);
    }
    parts
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use common::proto::mvccpb::{event::EventType, Event, KeyValue};

    /// A put event of `key` with a value of `value_len` bytes.
    pub(crate) fn ev(key: &str, value_len: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_split_large_responses_and_mark_all_but_the_last() {
        let r = WatchResponse {
            events: (0..10).map(|i| ev(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        let parts = fragments(r.clone(), true, 350);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        assert_eq!(fragments(r.clone(), false, 350).len(), 1);
        assert_eq!(fragments(r, true, 1 << 20).len(), 1);
    }
}
