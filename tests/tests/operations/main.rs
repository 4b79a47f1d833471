//! Operating a member: the daemons' command lines, probes, metrics, packaging, triad up, private files, TLS, the proxies, and the repository's own tidiness.
//! One scenario per file; every test starts the real daemon binaries.

mod bad_setting_stops_member;
mod clean_logs;
mod container;
mod daemon_cli;
mod etcd_config_file;
mod etcd_server_flags;
mod health_probes;
mod metrics;
mod packaging;
mod private_files;
mod proxy_commands;
mod proxy_l4;
mod proxy_l7;
mod tidy;
mod tls;
mod tls_certificate_checks;
mod triad_up_fails_loudly;
