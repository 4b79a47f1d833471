//! etcd 3.6's `--feature-gates`: `Name=bool` pairs, parsed with etcd's
//! errors, for the gates etcd 3.6 knows. What each means for triad is
//! with the gate.

use crate::config::ConfigError;

/// etcd 3.6's gates and their defaults.
const GATES: &[(&str, bool)] = &[
    ("AllAlpha", false),
    ("AllBeta", false),
    // Checked by every daemon in triad; the gate says nothing more.
    ("CompactHashCheck", false),
    // raftd's initial corruption check (as --experimental-initial-corrupt-check).
    ("InitialCorruptCheck", false),
    // Lease TTLs are always checkpointed through raft and kept; the gates
    // are accepted, turning them off is warned of.
    ("LeaseCheckpoint", false),
    ("LeaseCheckpointPersist", false),
    ("SetMemberLocalAddr", false),
    ("StopGRPCServiceOnDefrag", false),
    ("TxnModeWriteWithSharedBuffer", true),
];

/// The gates as set (each gate's default unless given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    values: Vec<(&'static str, bool)>,
}

impl Default for FeatureGates {
    fn default() -> Self {
        FeatureGates {
            values: GATES.to_vec(),
        }
    }
}

impl FeatureGates {
    /// `A=true,B=false`, as etcd's flag takes it (spaces around items
    /// ignored; Go's boolean words).
    pub fn parse(text: &str) -> Result<FeatureGates, ConfigError> {
        let mut given: Vec<(&'static str, bool)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError(format!("missing bool value for {item}")))?;
            let (name, value) = (name.trim(), value.trim());
            let on = go_bool(value).ok_or_else(|| {
                ConfigError(format!(
                    "invalid value of {name}={value}, err: strconv.ParseBool: parsing {value:?}: invalid syntax"
                ))
            })?;
            let known = GATES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ConfigError(format!("unrecognized feature gate: {name}")))?;
            given.push((known.0, on));
        }
        let mut gates = FeatureGates::default();
        // AllAlpha turns every alpha gate on unless it is set itself.
        if given.contains(&("AllAlpha", true)) {
            for (name, on) in gates.values.iter_mut() {
                *on = *on || !matches!(*name, "AllBeta" | "TxnModeWriteWithSharedBuffer");
            }
        }
        for (name, on) in given {
            if let Some(slot) = gates.values.iter_mut().find(|(n, _)| *n == name) {
                slot.1 = on;
            }
        }
        Ok(gates)
    }

    /// Gates turned on that change nothing in triad, with the reason.
    pub fn without_effect(&self) -> Vec<String> {
        const NONE: &[(&str, &str)] = &[
            (
                "CompactHashCheck",
                "triad compares members' hashes with --experimental-corrupt-check-time instead",
            ),
            (
                "StopGRPCServiceOnDefrag",
                "defragmentation runs beside the apply path and never stops serving",
            ),
            (
                "SetMemberLocalAddr",
                "raftd dials peers from the address the system picks",
            ),
        ];
        NONE.iter()
            .filter(|(gate, _)| self.enabled(gate))
            .map(|(gate, why)| format!("feature gate {gate} has no effect in triad: {why}"))
            .collect()
    }

    pub fn enabled(&self, gate: &str) -> bool {
        self.values.iter().any(|(n, on)| *n == gate && *on)
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_with_etcds_errors() {
        let g = FeatureGates::parse("InitialCorruptCheck=true, StopGRPCServiceOnDefrag=t").unwrap();
        assert!(g.enabled("InitialCorruptCheck") && g.enabled("StopGRPCServiceOnDefrag"));
        assert!(g.enabled("TxnModeWriteWithSharedBuffer") && !g.enabled("CompactHashCheck"));
        assert_eq!(
            FeatureGates::parse("Nope=true").unwrap_err().0,
            "unrecognized feature gate: Nope"
        );
        assert_eq!(
            FeatureGates::parse("LeaseCheckpoint=yes").unwrap_err().0,
            "invalid value of LeaseCheckpoint=yes, err: strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        assert!(FeatureGates::parse("AllAlpha=true")
            .unwrap()
            .enabled("SetMemberLocalAddr"));
        assert!(!FeatureGates::parse("AllAlpha=true,LeaseCheckpoint=false")
            .unwrap()
            .enabled("LeaseCheckpoint"));
        assert_eq!(FeatureGates::parse("").unwrap(), FeatureGates::default());
        assert_eq!(g.without_effect().len(), 1);
    }
}
