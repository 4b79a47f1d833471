//! etcd's server and cluster versions: parsing them as etcd does, the
//! cluster version a leader decides from its members' versions (etcd's
//! version monitor), and the checks on a downgrade target.

use std::fmt;

use crate::errors::EtcdError;

/// The longest version string a member may publish or a client may send.
pub const MAX_VERSION_BYTES: usize = 64;

/// A version as etcd compares them: major, minor, patch (pre-release and
/// build parts are ignored, as `semver.Version` comparisons in etcd's
/// cluster logic only look at major.minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// A full `major.minor.patch` (with optional `-pre`/`+build`), as
    /// `semver.NewVersion` accepts it.
    pub fn parse(text: &str) -> Option<Version> {
        if text.len() > MAX_VERSION_BYTES {
            return None;
        }
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut number = || -> Option<u64> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return None;
            }
            p.parse().ok()
        };
        let v = Version {
            major: number()?,
            minor: number()?,
            patch: number()?,
        };
        parts.next().is_none().then_some(v)
    }

    /// A downgrade target as etcd reads it: `3.5` or `3.5.7`, as a
    /// cluster version (`3.5.0`).
    pub fn parse_target(text: &str) -> Result<Version, EtcdError> {
        Version::parse(text)
            .or_else(|| Version::parse(&format!("{text}.0")))
            .map(Version::cluster)
            .ok_or(EtcdError::WrongDowngradeVersionFormat)
    }

    /// The cluster version this version belongs to (patch dropped).
    pub fn cluster(self) -> Version {
        Version { patch: 0, ..self }
    }

    /// `major.minor`, as etcd 3.6 names a cluster version in responses.
    pub fn major_minor(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Whether this is etcd 3.6 or later, whose answers name a cluster
    /// version as major.minor and report a storage version.
    pub fn is_3_6_or_later(self) -> bool {
        (self.major, self.minor) >= (3, 6)
    }

    /// Whether `to` is exactly one minor version below `self` (etcd's
    /// only allowed downgrade step).
    pub fn steps_down_to(self, to: Version) -> bool {
        self.major == to.major && self.minor == to.minor + 1
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The cluster version the leader should set, if it should change
/// (etcd's `decideClusterVersion`): `members` holds each member's server
/// version (None: not known yet, which defers any change); with a
/// downgrade enabled to `downgrade`, the cluster version steps down to it.
pub fn decide(
    current: Option<Version>,
    members: &[Option<Version>],
    downgrade: Option<Version>,
) -> Option<Version> {
    let known: Option<Vec<Version>> = members.iter().copied().collect();
    let lowest = known?.into_iter().min()?.cluster();
    match (current, downgrade) {
        (None, _) => Some(lowest),
        (Some(cv), Some(target)) => {
            // Step down only to the target, one minor below both the
            // cluster version and the lowest member's.
            (cv != target && cv.steps_down_to(target) && lowest.steps_down_to(target))
                .then_some(target)
        }
        (Some(cv), None) => (cv < lowest && cv.major == lowest.major).then_some(lowest),
    }
}

/// Whether a downgrade to `target` is finished: every member runs it
/// (etcd's `CancelDowngradeIfNeeded` then clears the downgrade).
pub fn downgrade_finished(members: &[Option<Version>], target: Version) -> bool {
    !members.is_empty()
        && members
            .iter()
            .all(|m| m.is_some_and(|v| v.cluster() == target))
}

/// etcd's checks on a downgrade target (`DowngradeValidate`): one minor
/// below the cluster version, and no downgrade already enabled.
pub fn check_downgrade(
    cluster: Option<Version>,
    target: Version,
    enabled: bool,
) -> Result<(), EtcdError> {
    let cluster = cluster.ok_or(EtcdError::ClusterVersionUnavailable)?;
    if !cluster.steps_down_to(target) {
        return Err(EtcdError::InvalidDowngradeTargetVersion);
    }
    if enabled {
        return Err(EtcdError::DowngradeInProcess);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_parse_as_semver_does() {
        assert_eq!(
            v("3.5.17"),
            Version {
                major: 3,
                minor: 5,
                patch: 17
            }
        );
        assert_eq!(v("3.6.0-rc.1").cluster(), v("3.6.0"));
        for bad in [
            "", "3", "3.5", "3.5.x", "3..1", "3.5.1.2", "-1.2.3", "3.5.1 ",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::parse_target("3.5"), Ok(v("3.5.0")));
        assert_eq!(Version::parse_target("3.5.7"), Ok(v("3.5.0")));
        for bad in ["", "3", "3.5.x", "three"] {
            assert_eq!(
                Version::parse_target(bad),
                Err(EtcdError::WrongDowngradeVersionFormat)
            );
        }
    }

    #[test]
    fn the_cluster_version_is_the_lowest_member_version() {
        let all = |list: &[&str]| list.iter().map(|s| Some(v(s))).collect::<Vec<_>>();
        assert_eq!(
            decide(None, &all(&["3.5.17", "3.4.2"]), None),
            Some(v("3.4.0"))
        );
        assert_eq!(decide(None, &[Some(v("3.5.1")), None], None), None);
        assert_eq!(
            decide(Some(v("3.4.0")), &all(&["3.5.17", "3.5.2"]), None),
            Some(v("3.5.0"))
        );
        // Never down without a downgrade, never across majors.
        assert_eq!(decide(Some(v("3.5.0")), &all(&["3.4.1"]), None), None);
        assert_eq!(decide(Some(v("3.5.0")), &all(&["4.0.0"]), None), None);
        // A downgrade steps down to its target.
        let target = Some(v("3.4.0"));
        assert_eq!(decide(Some(v("3.5.0")), &all(&["3.5.17"]), target), target);
        assert_eq!(decide(Some(v("3.4.0")), &all(&["3.5.17"]), target), None);
    }

    #[test]
    fn downgrades_go_one_minor_down_one_at_a_time() {
        let cv = Some(v("3.5.0"));
        assert_eq!(check_downgrade(cv, v("3.4.0"), false), Ok(()));
        for bad in ["3.5.0", "3.3.0", "2.4.0", "3.6.0"] {
            assert_eq!(
                check_downgrade(cv, v(bad), false),
                Err(EtcdError::InvalidDowngradeTargetVersion),
                "{bad}"
            );
        }
        assert_eq!(
            check_downgrade(cv, v("3.4.0"), true),
            Err(EtcdError::DowngradeInProcess)
        );
        assert_eq!(
            check_downgrade(None, v("3.4.0"), false),
            Err(EtcdError::ClusterVersionUnavailable)
        );
        assert!(downgrade_finished(&[Some(v("3.4.9"))], v("3.4.0")));
        assert!(!downgrade_finished(
            &[Some(v("3.4.9")), Some(v("3.5.1"))],
            v("3.4.0")
        ));
    }
}
