//! The names a certificate is valid for: its subject's common name and its
//! subject alternative names (DNS names, with one leading `*.` wildcard
//! label, and IP addresses), as Go's VerifyHostname reads them. etcd's
//! `--*-cert-allowed-cn`/`-hostname` checks and raftd's "this certificate
//! belongs to that member" use them.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertNames {
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertNames {
    pub fn parse(der: &[u8]) -> Option<CertNames> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut names = CertNames {
            common_name,
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.dns.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.ips.extend(ip);
                    }
                    _ => {}
                }
            }
        }
        Some(names)
    }

    /// Whether the certificate is valid for `host` (a name or an address).
    pub fn covers(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_match_as_go_matches_them() {
        let names = CertNames {
            common_name: Some("m1".into()),
            dns: vec!["m1.example".into(), "*.peers.example".into()],
            ips: vec!["127.0.0.1".parse().expect("ip")],
        };
        assert!(names.covers("m1.example"));
        assert!(names.covers("M1.Example."));
        assert!(names.covers("a.peers.example"));
        assert!(!names.covers("a.b.peers.example"));
        assert!(!names.covers("peers.example"));
        assert!(names.covers("127.0.0.1"));
        assert!(!names.covers("127.0.0.2"));
        assert!(!names.covers("m1"));
    }
}
