//! dns:// targets: the name resolves to at least one address through the system resolver
//! (getaddrinfo: /etc/hosts, then the nameservers of /etc/resolv.conf, as the app will see it).

use super::ProbeError;

pub async fn resolve(name: &str) -> Result<String, ProbeError> {
    let addrs: Vec<_> = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|e| ProbeError::NameNotFound(format!("{name}: {e}")))?
        .map(|a| a.ip().to_string())
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::NameNotFound(format!("{name}: no addresses")));
    }
    Ok(format!("resolved to {}", addrs.join(", ")))
}
