//! The life of a session, shared by `mesh`, `exchange` and `preview`: run the command's setup
//! against the undo stack while listening for Ctrl-C/SIGTERM; on failure or interruption roll
//! back; once up, print how to reach it and hold until asked to stop (or until the session is
//! lost), then tear down by running the same stack.
//!
//! Also the shadow part every command shares: Secret, Pod (and Service), tunnel, Ready.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use ktx_tunnel::client::Status;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::{Global, Output};
use crate::cluster::api::{wait, Kind, Kube};
use crate::error::{Error, Result};
use crate::lifecycle::command::{LocalCommand, Running};
use crate::lifecycle::link;
use crate::lifecycle::session::LeaseKeeper;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::undo::{ObjKind, Step, Undo, UndoEnv};
use crate::objects::shadow::{self, ShadowParams};
use crate::plan::ownership::{self, SessionOwner};
use crate::progress::Progress;

/// Everything a command needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub kube: Kube,
    pub global: Global,
    /// `user@host`.
    pub holder: String,
    pub progress: Progress,
}

impl Ctx {
    /// What `undo`'s steps need.
    pub fn undo_env(&self, undo: &Undo) -> UndoEnv {
        UndoEnv {
            kube: self.kube.clone(),
            token: undo.token().to_string(),
            holder: self.holder.clone(),
            timeout: self.global.timeout,
            progress: self.progress.clone(),
        }
    }
}

/// A session that is up: what to print, and what can end it.
#[derive(Debug)]
pub struct Ready {
    /// Lines for people (stdout).
    pub text: Vec<String>,
    /// The same for `-o json`.
    pub json: serde_json::Value,
    /// Turns `Some(reason)` when the session's Lease is lost.
    pub lost: watch::Receiver<Option<String>>,
    /// The tunnel's state, to report drops and recoveries.
    pub tunnel: watch::Receiver<Status>,
    /// The session's Lease and LOCAL ports, for `ktx status`'s view of the developer's process
    /// (noted once the session is up: not a setup step, nothing to undo).
    pub local: crate::lifecycle::local::LocalReport,
}

/// Runs `setup`, then holds the session until Ctrl-C/SIGTERM, then tears down. Any failure of
/// `setup`, and a signal during it, rolls back everything `setup` recorded on `undo`.
pub async fn session(
    ctx: &Ctx,
    shutdown: &Shutdown,
    undo: &Undo,
    setup: impl std::future::Future<Output = Result<Ready>>,
) -> Result<()> {
    session_with(ctx, shutdown, undo, setup, None).await
}

/// [`session`] that, once up, runs `command` (`-- CMD`) and ends when it exits; a stop request
/// reaches the command first. The result is the command's when it did not succeed.
pub async fn session_with(
    ctx: &Ctx,
    shutdown: &Shutdown,
    undo: &Undo,
    setup: impl std::future::Future<Output = Result<Ready>>,
    command: Option<LocalCommand>,
) -> Result<()> {
    let started = Instant::now();
    let outcome = tokio::select! {
        r = setup => r,
        _ = shutdown.reached(1) => Err(Error::Interrupted),
    };
    let mut ready = match outcome {
        Ok(r) => r,
        Err(e) => {
            // A refusal before anything was created needs no story: the error says it all.
            if !undo.holds_only_the_lock() {
                ctx.progress.warn(match &e {
                    Error::Interrupted => {
                        "interrupted: rolling back everything set up so far".to_string()
                    }
                    _ => "setup failed (see below): rolling back everything set up so far"
                        .to_string(),
                });
            }
            rollback(ctx, shutdown, undo).await?;
            return Err(e);
        }
    };
    let took = started.elapsed();
    crate::lifecycle::local::report_on_lease(ctx.kube.clone(), std::mem::take(&mut ready.local));
    match ctx.global.output {
        Output::Json => {
            let mut json = ready.json.clone();
            json["setupSeconds"] = serde_json::json!(took.as_secs_f64());
            println!("{json}");
        }
        Output::Text => {
            ctx.progress
                .done(format!("Session is up after {:.1}s", took.as_secs_f64()));
            for line in &ready.text {
                println!("{line}");
            }
            if command.is_none() {
                println!("Press Ctrl-C to end the session and restore everything.");
            }
        }
    }
    let mut running = match command.as_ref().map(LocalCommand::spawn).transpose() {
        Ok(r) => r,
        Err(e) => {
            ctx.progress
                .warn("the command did not start (see below): ending the session");
            rollback(ctx, shutdown, undo).await?;
            return Err(e);
        }
    };
    if let Some(r) = &running {
        ctx.progress.done(format!(
            "Started {}; the session ends when it exits (Ctrl-C stops it first)",
            r.name()
        ));
    }
    let end = hold(ctx, shutdown, &mut ready, running.as_mut()).await;
    let (lost, outcome) = match (end, running.as_mut()) {
        (End::Exited(status), Some(r)) => {
            ctx.progress
                .done(format!("{} exited; ending the session", r.name()));
            (None, Some(r.outcome(status)))
        }
        (End::Stopped | End::Exited(_), None) => (None, None),
        (End::Stopped, Some(r)) => {
            ctx.progress.done(format!(
                "Stopping {} (SIGTERM) before the teardown",
                r.name()
            ));
            let status = r.stop(shutdown, shutdown.count()).await;
            (None, Some(r.outcome(status)))
        }
        (End::Lost(reason), r) => {
            if let Some(r) = r {
                ctx.progress.warn(format!(
                    "session lost: {reason}; stopping {} (SIGTERM)",
                    r.name()
                ));
                let status = r.stop(shutdown, shutdown.count()).await;
                let _ = r.outcome(status);
            }
            (Some(reason), None)
        }
    };
    let teardown = Instant::now();
    ctx.progress.done(match &lost {
        Some(reason) => format!("Session lost: {reason}; cleaning up"),
        None => "Ending the session: removing the rule first".to_string(),
    });
    rollback(ctx, shutdown, undo).await?;
    ctx.progress.done(format!(
        "Session ended (teardown took {:.1}s)",
        teardown.elapsed().as_secs_f64()
    ));
    match (lost, outcome) {
        (Some(reason), _) => Err(Error::SessionLost(reason)),
        (None, Some(r)) => r,
        (None, None) => Ok(()),
    }
}

/// Why a held session ends.
enum End {
    /// A stop request (Ctrl-C, SIGTERM).
    Stopped,
    /// The Lease was lost, or the tunnel failed for good.
    Lost(String),
    /// `-- CMD` exited by itself.
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// Waits for a stop request, a lost Lease or the command's exit; reports tunnel drops meanwhile.
async fn hold(
    ctx: &Ctx,
    shutdown: &Shutdown,
    ready: &mut Ready,
    running: Option<&mut Running>,
) -> End {
    let mut was_up = true;
    let mut tunnel_reports = true;
    let exited = async {
        match running {
            Some(r) => r.exited().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    loop {
        tokio::select! {
            _ = shutdown.reached(1) => return End::Stopped,
            status = &mut exited => return End::Exited(status),
            r = ready.lost.changed() => {
                if r.is_err() {
                    return End::Lost("the Lease keeper stopped".into());
                }
                if let Some(reason) = ready.lost.borrow().clone() {
                    return End::Lost(reason);
                }
            }
            r = ready.tunnel.changed(), if tunnel_reports => {
                if r.is_err() {
                    // The tunnel is gone for good; keep the session until told otherwise.
                    tunnel_reports = false;
                    continue;
                }
                let status = ready.tunnel.borrow().clone();
                match status {
                    Status::Up { .. } if !was_up => {
                        was_up = true;
                        ctx.progress.done("Tunnel is up again");
                    }
                    Status::Down { error, retry_in } if was_up => {
                        was_up = false;
                        ctx.progress.warn(format!(
                            "tunnel down ({error}); reconnecting in {retry_in:?} — your requests fall back meanwhile"
                        ));
                    }
                    Status::Failed { error } => {
                        return End::Lost(format!("the tunnel failed for good: {error}"));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Runs the undo stack. A second stop request says what is going on; a third abandons the rest
/// to `ktx clean`.
async fn rollback(ctx: &Ctx, shutdown: &Shutdown, undo: &Undo) -> Result<()> {
    let env = ctx.undo_env(undo);
    let base = shutdown.count();
    let run = undo.run(&env);
    tokio::pin!(run);
    let mut warned = false;
    loop {
        let next = if warned { base + 2 } else { base + 1 };
        tokio::select! {
            r = &mut run => return r,
            _ = shutdown.reached(next) => {
                if warned {
                    return Err(Error::Leftovers {
                        left: "the rest of the teardown (interrupted)".into(),
                    });
                }
                warned = true;
                ctx.progress.warn("still restoring; press Ctrl-C again to stop now and leave the rest to `ktx clean`");
            }
        }
    }
}

/// How long a session object's create waits out a 409: the objects of a session removed just
/// before (an expired session of the same name) go with their Lease through the garbage
/// collector, within a second or two. At most `--timeout`.
pub const SESSION_NAME_GRACE: Duration = Duration::from_secs(10);

/// Creates `obj` as an object of this run (and, with `owner`, of that session): recorded on
/// `undo` before it is sent, its UID recorded once created. A name taken by an object ktx did
/// not make for this session is [`Error::NotOurs`], and nothing of it is touched.
pub async fn create_own<K: Kind>(
    ctx: &Ctx,
    undo: &Undo,
    kind: ObjKind,
    shared: bool,
    mut obj: K,
    owner: Option<&SessionOwner>,
) -> Result<K> {
    let name = obj.name_any();
    ownership::mark_created(obj.meta_mut(), undo.token());
    if let Some(o) = owner {
        ownership::mark_session(obj.meta_mut(), o);
    }
    let made = undo.creating(kind, &name, shared);
    let started = Instant::now();
    let mut deadline = started + SESSION_NAME_GRACE.min(ctx.global.timeout);
    loop {
        match ctx.kube.create(&obj).await {
            Err(Error::Api { source, .. })
                if crate::error::status_code(&source) == Some(409)
                    && owner.is_some()
                    && Instant::now() < deadline =>
            {
                // One being deleted (a session just rolled back or ended: a pod can take the
                // kubelet a while) is waited for as long as any other step; one that is not
                // only for the grace.
                // (Secrets are never read: ktx has no right to; theirs is the plain grace.)
                let terminating = kind != ObjKind::Secret
                    && matches!(
                        ctx.kube.get::<K>(&name).await,
                        Ok(Some(o)) if o.meta().deletion_timestamp.is_some()
                    );
                if terminating {
                    deadline = deadline.max(started + ctx.global.timeout);
                }
                ctx.progress.waiting(format!(
                    "{kind} {}/{name} exists{}; waiting in case it is a removed session's, on its way out",
                    ctx.kube.namespace,
                    if terminating { " and is being deleted" } else { "" }
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => break create_result(ctx, kind, name, owner, &made, r),
        }
    }
}

fn create_result<K: Kind>(
    ctx: &Ctx,
    kind: ObjKind,
    name: String,
    owner: Option<&SessionOwner>,
    made: &crate::lifecycle::undo::Made,
    r: Result<K>,
) -> Result<K> {
    match r {
        Ok(k) => {
            made.record(&k);
            Ok(k)
        }
        Err(Error::Api { source, .. }) if crate::error::status_code(&source) == Some(409) => {
            Err(Error::NotOurs {
                kind: kind.to_string(),
                namespace: ctx.kube.namespace.clone(),
                name,
                for_what: if owner.is_some() {
                    " for this session".into()
                } else {
                    String::new()
                },
            })
        }
        Err(e) => Err(e),
    }
}

/// Creates the session's Lease (marked as this run's, recorded on `undo` first) and starts
/// renewing it; its UID is what the session's objects name as their owner.
pub async fn start_lease(
    ctx: &Ctx,
    undo: &Undo,
    mut lease: Lease,
    service: &str,
) -> Result<LeaseKeeper> {
    ownership::mark_created(&mut lease.metadata, undo.token());
    let made = undo.creating(ObjKind::Lease, &lease.name_any(), false);
    let keeper = LeaseKeeper::create(&ctx.kube, &lease, service, &ctx.progress).await?;
    made.set(keeper.uid());
    Ok(keeper)
}

/// Creates the shadow of a session (Secret, Pod, and its Service if `with_service`), brings the
/// tunnel up and waits until the pod is Ready. Every object is on `undo` before it is created,
/// carries the session's Lease as owner and is deleted only by its UID.
pub async fn start_shadow(
    ctx: &Ctx,
    undo: &Undo,
    p: &ShadowParams<'_>,
    owner: &SessionOwner,
    with_service: bool,
) -> Result<watch::Receiver<Status>> {
    let kube = &ctx.kube;
    let timeout = ctx.global.timeout;
    let creds = create_shadow(ctx, undo, p, owner, with_service).await?;
    let link = link::open(
        kube,
        p.name,
        p.tunnel_port(),
        p.exposed,
        &creds,
        timeout,
        &ctx.progress,
    )
    .await?;
    let status = link.status();
    undo.push(Step::CloseTunnel(link));
    ctx.progress
        .done("Tunnel is up (TLS 1.3, pinned certificates)");
    wait_shadow_ready(ctx, p.name).await?;
    Ok(status)
}

/// Waits until the shadow (or connect) pod `name` is Ready: its tunnel is up.
pub async fn wait_shadow_ready(ctx: &Ctx, name: &str) -> Result<()> {
    wait::pod(
        &ctx.kube,
        name,
        wait::Goal::Ready,
        "shadow pod",
        ctx.global.timeout,
        &ctx.progress,
    )
    .await?;
    ctx.progress
        .done(format!("Shadow pod {}/{name} is Ready", ctx.kube.namespace));
    Ok(())
}

/// Creates a session's shadow (or connect) pod with its Secret (and its Service if
/// `with_service`) and waits until it runs; returns the credentials ktx's tunnel end uses.
/// Every object is on `undo` before it is created, carries the session's Lease as owner and is
/// deleted only by its UID.
pub async fn create_shadow(
    ctx: &Ctx,
    undo: &Undo,
    p: &ShadowParams<'_>,
    owner: &SessionOwner,
    with_service: bool,
) -> Result<link::Credentials> {
    let kube = &ctx.kube;
    let ns = &kube.namespace;
    let timeout = ctx.global.timeout;
    let creds = link::credentials(p.session)?;
    let secret = shadow::secret(p, creds.shadow_secret_data());
    // Owned by the Lease alone, not also by the pod: the garbage collector takes it with the
    // Lease, not only once a slow kubelet has removed the stopped pod (minutes, at times).
    create_own(ctx, undo, ObjKind::Secret, false, secret, Some(owner)).await?;
    create_own(ctx, undo, ObjKind::Pod, false, shadow::pod(p), Some(owner)).await?;
    if with_service {
        create_own(
            ctx,
            undo,
            ObjKind::Service,
            false,
            shadow::service(p),
            Some(owner),
        )
        .await?;
    }
    ctx.progress
        .done(format!("Created shadow pod {ns}/{} and its Secret", p.name));
    wait::pod(
        kube,
        p.name,
        wait::Goal::Running,
        "shadow pod",
        timeout,
        &ctx.progress,
    )
    .await?;
    Ok(creds)
}
