//! Alarms, as etcd keeps them: a set of (member, alarm) applied through
//! raft, stored in `meta`. While one is raised, apply refuses what etcd's
//! capped and corrupt appliers refuse: with NOSPACE, puts (and txns that
//! put) and lease grants; with CORRUPT, every write.

use fjall::Readable;
use prost::Message;

use crate::schema::{Keyspaces, META_ALARMS};
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::request_op::Request as TxnOp;
use common::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, TxnRequest,
};
use common::proto::storage::raft_request::Op;

/// The raised alarms as `r` sees them.
pub fn list<R: Readable>(r: &R, ks: &Keyspaces) -> Result<Vec<AlarmMember>, StoreError> {
    match r.get(&ks.meta, META_ALARMS)? {
        None => Ok(Vec::new()),
        Some(v) => Ok(AlarmResponse::decode(v.as_ref())?.alarms),
    }
}

/// Apply an ACTIVATE or DEACTIVATE; the response lists the alarm changed
/// (nothing when it was already so), as etcd's does.
pub fn apply(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    ks: &Keyspaces,
    alarms: &mut Vec<AlarmMember>,
    req: &AlarmRequest,
) -> Result<AlarmResponse, StoreError> {
    let member = AlarmMember {
        member_id: req.member_id,
        alarm: req.alarm,
    };
    let known = alarms.iter().position(|a| *a == member);
    let changed = match (AlarmAction::try_from(req.action), known) {
        (Ok(AlarmAction::Activate), None) if req.alarm != AlarmType::None as i32 => {
            alarms.push(member);
            Some(member)
        }
        (Ok(AlarmAction::Deactivate), Some(i)) => Some(alarms.remove(i)),
        _ => None,
    };
    if changed.is_some() {
        let stored = AlarmResponse {
            header: None,
            alarms: alarms.clone(),
        };
        tx.insert(&ks.meta, META_ALARMS, stored.encode_to_vec());
    }
    Ok(AlarmResponse {
        header: None,
        alarms: changed.into_iter().collect(),
    })
}

fn raised(alarms: &[AlarmMember], kind: AlarmType) -> bool {
    alarms.iter().any(|a| a.alarm == kind as i32)
}

fn txn_puts(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(TxnOp::RequestPut(_)) => true,
            Some(TxnOp::RequestTxn(inner)) => txn_puts(inner),
            _ => false,
        })
}

/// etcd's refusal of `op` while `alarms` are raised, if any.
pub fn refuse(alarms: &[AlarmMember], op: &Op) -> Option<EtcdError> {
    if raised(alarms, AlarmType::Nospace) {
        let grows = match op {
            Op::Put(_) | Op::LeaseGrant(_) => true,
            Op::Txn(t) => txn_puts(t),
            _ => false,
        };
        if grows {
            return Some(EtcdError::NoSpace);
        }
    }
    let member_upkeep = matches!(
        op,
        Op::Alarm(_)
            | Op::LeaseCheckpoint(_)
            | Op::PeerSecret(_)
            | Op::ClusterVersion(_)
            | Op::Downgrade(_)
            | Op::MemberVersion(_)
    );
    if raised(alarms, AlarmType::Corrupt) && !member_upkeep {
        return Some(EtcdError::Corrupt);
    }
    None
}
