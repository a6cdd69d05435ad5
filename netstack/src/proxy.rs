//! SOCKS5 and HTTP proxy on one port, for `ktx connect` without root (and `ktx connect -- CMD`).
//!
//! The first byte picks the protocol: `0x05` is SOCKS5 ([`socks5`]), anything else is read as an
//! HTTP/1 request head ([`http`]): `CONNECT host:port` tunnels, and an absolute-form request
//! (`GET http://svc.ns/ HTTP/1.1`, what curl sends for `http://` URLs through `HTTP_PROXY`) is
//! rewritten to origin-form and sent as the connection's only request (`Connection: close`).
//! Names are resolved here ("remote" resolution for the client): the [`NameTable`] first, then
//! the system resolver. Every flow then goes through [`Dial`] and [`splice`].
//!
//! Bounds: `max_flows` connections at once (past it, new ones are closed), the handshake (SOCKS5
//! negotiation or the HTTP head) must finish within `handshake_timeout` and fit in `max_head`
//! bytes, and a flow with no byte moving for `idle` is closed.

pub mod http;
pub mod socks5;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::dial::{Dial, DialError};
use crate::names::{Lookup, NameTable};
use crate::splice::splice;

/// Limits of the proxy (ktx exposes each as a flag).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub handshake_timeout: Duration,
    pub max_head: usize,
    pub max_flows: usize,
    pub idle: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            handshake_timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_flows: 1024,
            idle: Duration::from_secs(3600),
        }
    }
}

/// Why a client's destination could not be reached; each protocol maps it to its own answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no such host {host}")]
    NoSuchHost { host: String },
    #[error(transparent)]
    Dial(#[from] DialError),
}

/// Serves the proxy on `listener` until the future is dropped; its flows end with it.
pub async fn serve<D: Dial>(
    listener: TcpListener,
    dial: Arc<D>,
    names: NameTable,
    config: ProxyConfig,
) {
    let slots = Arc::new(Semaphore::new(config.max_flows));
    let config = Arc::new(config);
    // Every flow is a task of this set: dropping the server ends them.
    let mut flows = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = flows.join_next(), if !flows.is_empty() => continue,
        };
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                crate::accept_failed("proxy", &e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "proxy: too many flows, closing");
            continue;
        };
        let (dial, names, config) = (dial.clone(), names.clone(), config.clone());
        flows.spawn(async move {
            let _slot = slot;
            if let Err(e) = handle(conn, &*dial, &names, &config).await {
                tracing::debug!(%peer, error = %e, "proxy: flow ended");
            }
        });
    }
}

async fn handle<D: Dial>(
    mut conn: TcpStream,
    dial: &D,
    names: &NameTable,
    config: &ProxyConfig,
) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    // The client's greeting and head must come within the handshake timeout; the dial after
    // them is bounded by its own timeout, so its answer (refused, timed out) reaches the client.
    let deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, conn.peek(&mut first))
        .await
        .map_err(|_| handshake_timed_out())??;
    if peeked == 0 {
        return Ok(());
    }
    let flow = if first[0] == 0x05 {
        socks5::handshake(&mut conn, dial, names, deadline).await?
    } else {
        http::handshake(&mut conn, dial, names, config.max_head, deadline).await?
    };
    if let Some(mut remote) = flow {
        if let Err(e) = splice(&mut conn, &mut remote, config.idle).await {
            // The destination reset, or the flow idled out: the client sees a reset too, never
            // a clean end that would pass a cut answer for a whole one.
            let _ = conn.set_zero_linger();
            return Err(e);
        }
    }
    Ok(())
}

fn handshake_timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "proxy handshake")
}

/// Resolves `host` (a literal address, a cluster name, or any other name) to one address.
pub async fn resolve(names: &NameTable, host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let no_such = || ConnectError::NoSuchHost {
        host: host.to_owned(),
    };
    let names = names.snapshot();
    let mut name = host.to_owned();
    // An ExternalName Service is followed to the name it stands for, a few times at most.
    for hop in 0..=crate::dns::alias::MAX_ALIASES {
        // The asked name may be a short form; an alias's target is absolute.
        let found = if hop == 0 {
            names.lookup(&name)
        } else {
            names.lookup_target(&name)
        };
        match found {
            Lookup::Found(ips) => {
                let ip = ips
                    .iter()
                    .find(|ip| ip.is_ipv4())
                    .or(ips.first())
                    .ok_or_else(no_such)?;
                return Ok(SocketAddr::new(*ip, port));
            }
            Lookup::NoSuchName => return Err(no_such()),
            // Cluster DNS reads every `externalName` as a name, one that looks like an address
            // too, and such a name does not resolve; the system resolver would read it as the
            // address. As in the pod (and as ktx's own DNS answers): no such host.
            Lookup::NotOurs if hop > 0 && reads_as_address(&name) => return Err(no_such()),
            Lookup::NotOurs => {
                return tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(no_such)
            }
            Lookup::Alias(target) => name = target,
        }
    }
    Err(no_such())
}

/// A name the system resolver takes for an address: an IP address, or one whose last label is
/// a number (`10.1`, `0x0a000001`: `inet_aton`'s forms). No top-level domain is a number.
fn reads_as_address(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let last = name.rsplit('.').next().unwrap_or(name);
    name.parse::<IpAddr>().is_ok()
        || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
}

/// Resolves and dials.
pub async fn connect<D: Dial>(
    dial: &D,
    names: &NameTable,
    host: &str,
    port: u16,
) -> Result<D::Stream, ConnectError> {
    let dst = resolve(names, host, port).await?;
    Ok(dial.dial(dst).await?)
}
