//! Power loss: a member's disk loses everything not yet fsynced (and, torn,
//! part of the last write) while every process on it dies. Each daemon
//! boots from what is left, and every write acknowledged before the cut is
//! still there at its revision.

use triad_tests::{power_disk, Member};

use crate::durability::{verify, wait_for_acks, Load};

/// One member under load loses power three times: twice plainly, once
/// with its last writes torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_of_one_member_lose_no_acknowledged_write() {
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    let mut member = Member::start_in(dir, &[]);
    for round in 0..3 {
        let load = Load::start(&member.endpoint(), 8).await;
        wait_for_acks(&load, 300 * (round + 1)).await;
        tokio::task::block_in_place(|| member.crash());
        let acks = load.stop().await;
        let unsynced: u64 = disk.unsynced().iter().map(|(_, b)| b).sum();
        if round == 2 {
            disk.torn_power_cut();
        } else {
            disk.power_cut();
        }
        eprintln!("power cut {round}: {unsynced} unsynced bytes lost");
        tokio::task::block_in_place(|| member.launch());
        verify(&member, &acks).await;
    }
}
