//! Clusters: membership, discovery, recovery, corruption checks, data dirs that belong to one cluster, the peer port, snapshots.
//! One scenario per file; every test starts the real daemon binaries.

mod cluster_basics;
mod cluster_recovery;
mod corruption;
mod discovery;
mod etcdctl_cluster_commands;
mod foreign_data_dir;
mod peer_port;
mod removed_member_stops;
mod snapshot_restore;
mod strict_reconfig;
mod versions_and_downgrade;
