//! The developer's process on this machine: whether something listens on each LOCAL port of
//! `--expose`. ktx only says so (like kt-connect's port check) and keeps going: the session works
//! as soon as the process starts, and until then the shadow applies the rule's policy to
//! every connection the process does not take (`shadow/src/unavailable.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::ports::ExposedPort;
use crate::progress::Progress;

/// A connection attempt to a local port may take this long (loopback answers at once).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether something accepts connections on 127.0.0.1:`port` now.
pub async fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The LOCAL ports of `exposed` where nothing listens now.
pub async fn not_listening(exposed: &[ExposedPort]) -> Vec<u16> {
    let mut down = Vec::new();
    for e in exposed {
        if !down.contains(&e.local) && !listening(e.local).await {
            down.push(e.local);
        }
    }
    down
}

/// Says, once, which LOCAL ports nothing listens on yet and what marked requests get meanwhile
/// (`meanwhile`, e.g. "go to the original workload").
pub async fn warn_if_not_listening(progress: &Progress, exposed: &[ExposedPort], meanwhile: &str) {
    let down = not_listening(exposed).await;
    if down.is_empty() {
        return;
    }
    let ports: Vec<String> = down.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    progress.warn(format!(
        "Nothing listens on {} yet: until your process starts there, your requests {meanwhile}. \
         ktx keeps going; the session works as soon as it listens (--skipPortChecking silences \
         this)",
        ports.join(", ")
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_and_a_closed_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap().port();
        // Bound, never listened on: refused, and no other test can be given it meanwhile.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let down = closed.local_addr().unwrap().port();
        let exposed = [up, down, down].map(|local| ExposedPort {
            local,
            port: 80,
            target: 8080,
        });
        assert!(listening(up).await);
        assert_eq!(not_listening(&exposed).await, vec![down]);
    }
}
