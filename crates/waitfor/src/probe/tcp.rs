//! TCP connect to every resolved address of a host in turn, the first that accepts wins. Used by
//! the tcp target and by every protocol probe to get its connection.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::ProbeError;
use crate::target::HostPort;

/// Resolves `addr` now (no caching between attempts: a Service may appear or move).
pub async fn resolve(addr: &HostPort) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Ok(ip) = addr.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, addr.port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| ProbeError::NameNotFound(format!("{}: {e}", addr.host)))?
        .collect();
    if found.is_empty() {
        return Err(ProbeError::NameNotFound(format!(
            "{}: no addresses",
            addr.host
        )));
    }
    Ok(found)
}

/// Connects to the first address of `addr` that accepts. When all fail, the error of the last
/// one is returned (they are usually the same class).
pub async fn connect(addr: &HostPort) -> Result<TcpStream, ProbeError> {
    let mut last = ProbeError::Refused;
    for socket_addr in resolve(addr).await? {
        match TcpStream::connect(socket_addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                tracing::trace!(address = %socket_addr, error = %e, "connect failed");
                last = ProbeError::from_io(&e);
            }
        }
    }
    Err(last)
}
