//! `ktx forward SERVICE [LOCAL:]REMOTE`: a local port that reaches Service SERVICE's port
//! REMOTE, for a developer who needs one dependency and no root (`kubectl port-forward svc/…`
//! picks one pod once and dies with it; this one follows the Service).
//!
//! Every accepted connection gets its own port-forward (through the API server, the same way
//! the tunnel reaches a shadow) to a Ready pod the Service selects, chosen round robin from a
//! list at most [`PODS_FRESH`] old. A pod that cannot be reached is skipped and the list read
//! again, so a restarted or rescheduled workload is followed without restarting `ktx forward`.
//! Nothing is created in the cluster: no Lease, no pod, nothing to clean up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::cli::ForwardArgs;
use crate::cluster::api::Kube;
use crate::error::{Error, Result};
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::{link, steps};
use crate::objects::selector_string;
use crate::progress::Progress;

/// How long a list of Ready pods is reused before it is read again.
pub const PODS_FRESH: Duration = Duration::from_secs(2);
/// Pods tried for one connection before it is given up (closed).
const ATTEMPTS: usize = 3;

/// The Ready pods of a selector, read at most every [`PODS_FRESH`] (and at once after a failure).
struct Pods {
    kube: Kube,
    selector: String,
    listed: Mutex<Option<(Instant, Vec<String>)>>,
    next: AtomicUsize,
}

impl Pods {
    async fn ready(&self, fresh: bool) -> Result<Vec<String>> {
        let mut listed = self.listed.lock().await;
        if let Some((at, pods)) = listed.as_ref() {
            if !fresh && at.elapsed() < PODS_FRESH {
                return Ok(pods.clone());
            }
        }
        let pods: Vec<String> = self
            .kube
            .list::<Pod>(&self.selector)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter_map(|p| p.metadata.name)
            .collect();
        *listed = Some((Instant::now(), pods.clone()));
        Ok(pods)
    }

    /// The next pod to try, round robin.
    async fn pick(&self, fresh: bool) -> Result<Option<String>> {
        let pods = self.ready(fresh).await?;
        if pods.is_empty() {
            return Ok(None);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pods.len();
        Ok(Some(pods[i].clone()))
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `ktx forward`.
pub async fn run(ctx: &Ctx, args: &ForwardArgs, shutdown: &Shutdown) -> Result<()> {
    let ns = ctx.kube.namespace.clone();
    let svc = steps::service(ctx, &args.service).await?;
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::Forward(format!(
                "Service {ns}/{} has no selector (its endpoints are managed by hand); forward to the pod or address behind it with `kubectl port-forward`",
                args.service
            ))
        })?;
    let plan = steps::ports(ctx, &svc, &selector, std::slice::from_ref(&args.port)).await?;
    let exposed = plan.exposed[0];
    let listener = TcpListener::bind((args.address, exposed.local))
        .await
        .map_err(|e| {
            Error::Forward(format!(
                "cannot listen on {}:{}: {e}; choose another LOCAL port ([LOCAL:]REMOTE)",
                args.address, exposed.local
            ))
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Forward(e.to_string()))?;
    let pods = Arc::new(Pods {
        kube: ctx.kube.clone(),
        selector: selector_string(&selector),
        listed: Mutex::new(None),
        next: AtomicUsize::new(0),
    });
    match pods.pick(true).await? {
        Some(_) => {}
        None => ctx.progress.warn(format!(
            "no pod of Service {ns}/{} is Ready yet; connections wait for one (up to {ATTEMPTS} tries each)",
            args.service
        )),
    }
    ctx.progress.done(format!(
        "Forwarding {local} → Service {ns}/{} port {} (pods' port {}); Ctrl-C to stop",
        args.service, exposed.port, exposed.target
    ));
    println!("{local}");
    let what = format!("Service {ns}/{} port {}", args.service, exposed.port);
    loop {
        let (client, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    ctx.progress.warn(format!("accepting on {local}: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.reached(1) => return Ok(()),
        };
        let pods = pods.clone();
        let kube = ctx.kube.clone();
        let progress = ctx.progress.clone();
        let what = what.clone();
        tokio::spawn(async move {
            carry(&kube, &pods, client, peer, exposed.target, &what, &progress).await;
        });
    }
}

/// Carries one local connection to a Ready pod, trying up to [`ATTEMPTS`] pods; closes it when
/// none can be reached.
async fn carry(
    kube: &Kube,
    pods: &Pods,
    mut client: TcpStream,
    peer: SocketAddr,
    port: u16,
    what: &str,
    progress: &Progress,
) {
    let _ = client.set_nodelay(true);
    let mut last = String::from("no Ready pod");
    for attempt in 0..ATTEMPTS {
        let pod = match pods.pick(attempt > 0).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                last = "no Ready pod".into();
                tokio::time::sleep(PODS_FRESH).await;
                continue;
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match link::connector(kube, &pod, port).connect().await {
            Ok(mut remote) => {
                tracing::debug!(%peer, %pod, "forwarding");
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut remote).await {
                    tracing::debug!(%peer, %pod, error = %e, "forwarded connection ended with an error");
                }
                return;
            }
            Err(e) => last = format!("pod {pod}: {e}"),
        }
    }
    progress.warn(format!("connection from {peer} to {what} closed: {last}"));
    // Dropped with SO_LINGER 0: the local client sees a reset, not a clean empty answer.
    let _ = client.set_zero_linger();
}
