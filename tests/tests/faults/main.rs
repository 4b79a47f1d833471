//! Faults: crashes, pauses, partitions, full disks, garbage on every port, the robustness suite.
//! One scenario per file; every test starts the real daemon binaries.

mod cluster_faults;
mod durability;
mod hostile_input;
mod log_write_failures;
mod nemesis;
mod partitions;
mod power_loss;
