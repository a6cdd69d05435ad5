//! The developer's process on this machine: whether something listens on each LOCAL port of
//! `--expose`. ktx only says so (like kt-connect's port check) and keeps going: the session works
//! as soon as the process starts, and until then the shadow applies the rule's policy to
//! every connection the process does not take (`shadow/src/unavailable.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use ktx_names::ANNOTATION_LOCAL_PROCESS;
use kube::api::{Patch, PatchParams};

use crate::cluster::api::Kube;
use crate::plan::ports::ExposedPort;
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

/// How often the LOCAL ports are probed for `ktx status`.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Whose process [`report_on_lease`] watches: the session's Lease (name and UID) and its
/// exposed ports.
#[derive(Debug, Clone, Default)]
pub struct LocalReport {
    pub lease: String,
    pub uid: String,
    pub exposed: Vec<ExposedPort>,
}

/// What [`report_on_lease`] writes: `listening`, or which ports nothing listens on.
pub fn describe(down: &[u16]) -> String {
    if down.is_empty() {
        return "listening".into();
    }
    let ports: Vec<String> = down.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("not listening on {}", ports.join(","))
}

/// Keeps the session Lease `lease`'s [`ANNOTATION_LOCAL_PROCESS`] current (probing every 2 s,
/// writing only on change), so `ktx status` can say whether each developer's process is up.
/// Ends by itself once the Lease is gone; the session's end or ktx's exit ends it too.
pub fn report_on_lease(kube: Kube, report: LocalReport) {
    let LocalReport {
        lease,
        uid,
        exposed,
    } = report;
    tokio::spawn(async move {
        let api = kube.api::<Lease>();
        let mut last: Option<String> = None;
        loop {
            let now = describe(&not_listening(&exposed).await);
            if last.as_deref() != Some(now.as_str()) {
                // The UID makes the patch fail (409) on a Lease of that name that is not ours.
                let patch = serde_json::json!({
                    "metadata": { "uid": uid, "annotations": { ANNOTATION_LOCAL_PROCESS: now } }
                });
                match api
                    .patch(&lease, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => last = Some(now),
                    Err(e) if matches!(crate::error::status_code(&e), Some(404 | 409)) => return,
                    // Said again at the next change or probe; the session does not depend on it.
                    Err(e) => {
                        tracing::debug!(%lease, error = %e, "could not note the local process's state")
                    }
                }
            }
            tokio::time::sleep(REPORT_EVERY).await;
        }
    });
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
        assert_eq!(
            describe(&not_listening(&exposed).await),
            format!("not listening on 127.0.0.1:{down}")
        );
        assert_eq!(describe(&[]), "listening");
    }
}
