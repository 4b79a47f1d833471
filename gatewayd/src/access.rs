//! etcd's access controller on the client port's HTTP endpoints (not
//! gRPC, not the metrics URLs): CORS headers for allowed origins, OPTIONS
//! answered at once, and plain-HTTP requests whose Host is not listed
//! refused with 421 (protection against DNS rebinding, CVE-2018-5702).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::config::ConfigError;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The origins (`--cors`) and hosts (`--host-whitelist`) allowed; None:
/// any ("*", etcd's default for both).
#[derive(Clone, Debug, Default)]
pub struct Access {
    origins: Option<HashSet<String>>,
    hosts: Option<HashSet<String>>,
}

impl Access {
    pub fn parse(cors: Option<&str>, hosts: Option<&str>) -> Result<Access, ConfigError> {
        let origins = match cors.map(str::trim) {
            None | Some("*") | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|o| origin(o.trim()))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let hosts = match hosts {
            None => None,
            Some(list) => {
                let set: HashSet<String> = list.split(',').map(str::to_string).collect();
                // "*" (or nothing) allows every host, as etcd's empty set.
                let any = set.contains("*") || set.len() == 1 && set.contains("");
                (!any).then_some(set)
            }
        };
        Ok(Access { origins, hosts })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.as_ref().is_none_or(|h| h.contains(host))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`.
    fn allowed_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(set) => origin
                .filter(|o| o.to_str().is_ok_and(|o| set.contains(o)))
                .cloned(),
        }
    }
}

/// One `--cors` origin as etcd's URL flag takes it: scheme, host and
/// port, nothing else.
fn origin(text: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError(format!("invalid value {text:?} for flag -cors: {why}"));
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| bad("missing scheme"))?;
    if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
        return Err(bad("URL scheme must be http, https, unix, or unixs"));
    }
    if rest.contains('/') {
        return Err(bad("URL must not contain a path"));
    }
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(bad("URL address does not have the form \"host:port\""));
    }
    Ok(text.to_string())
}

/// The request's Host without its port (brackets of an IPv6 literal
/// dropped), as Go's `net.SplitHostPort` leaves it.
fn hostname(req: &Request) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((inner, port)) = rest.split_once("]:") {
            if !port.is_empty() {
                return inner.to_string();
            }
        }
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_string(),
        _ => host,
    }
}

/// etcd's text for a refused Host (with the newline Go's `http.Error`
/// adds).
fn rebinding_refusal(host: &str) -> String {
    format!(
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist {host:?}\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
    )
}

/// The middleware: etcd's `accessController.ServeHTTP`.
pub async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let tls = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .is_some();
    if !tls {
        let host = hostname(&req);
        if !access.host_allowed(&host) {
            tracing::warn!(%host, "rejecting HTTP request to prevent DNS rebinding attacks");
            let mut resp =
                (StatusCode::MISDIRECTED_REQUEST, rebinding_refusal(&host)).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            return resp;
        }
    }
    let allowed = access.allowed_origin(req.headers().get(header::ORIGIN));
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    if let Some(origin) = allowed {
        let h = resp.headers_mut();
        h.append(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        h.append(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_etcds_flags() {
        assert!(Access::parse(None, None).unwrap().origins.is_none());
        let a = Access::parse(Some("http://a.example:80,https://b:443"), Some("a,b")).unwrap();
        assert_eq!(a.origins.as_ref().map(HashSet::len), Some(2));
        assert!(a.host_allowed("a") && !a.host_allowed("c"));
        for bad in ["a.example", "http://a.example", "ftp://a:1", "http://a:1/x"] {
            assert!(Access::parse(Some(bad), None).is_err(), "{bad}");
        }
        assert!(Access::parse(None, Some("*")).unwrap().host_allowed("any"));
    }
}
