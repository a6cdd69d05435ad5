//! `--env-file` and `-- CMD`'s environment: reads the pod of the Service's workload and the
//! ConfigMaps (and, with `--env-secrets`, Secrets) its container's environment names, resolves
//! it ([`crate::plan::workload_env`]) and writes the file. Runs before the session's setup and
//! changes nothing in the cluster.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;

use crate::cli::WorkloadEnvArgs;
use crate::error::{Error, Result};
use crate::lifecycle::flow::Ctx;
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::steps;
use crate::objects::selector_string;
use crate::plan::takeover::{self, State};
use crate::plan::workload_env::{self, Sources};

/// The workload's environment of Service `service` when `args` asks for it (`--env-file` or a
/// command), written to `--env-file` if given; `None` when not asked for. A stop request
/// (Ctrl-C) ends it: nothing has been set up yet.
pub async fn prepare(
    ctx: &Ctx,
    service: &str,
    args: &WorkloadEnvArgs,
    shutdown: &Shutdown,
) -> Result<Option<Vec<(String, String)>>> {
    if !args.wanted() {
        return Ok(None);
    }
    tokio::select! {
        biased;
        _ = shutdown.reached(1) => Err(Error::Interrupted),
        r = read(ctx, service, args) => r.map(Some),
    }
}

async fn read(ctx: &Ctx, service: &str, args: &WorkloadEnvArgs) -> Result<Vec<(String, String)>> {
    let kube = &ctx.kube;
    let ns = kube.namespace.as_str();
    let svc = steps::service(ctx, service).await?;
    // The workload is what the Service selected before ktx took it over (if it did).
    let selector = match takeover::state(&svc, ns)? {
        State::Free { selector } => selector,
        State::Taken { original, .. } => original,
    };
    let selector = selector_string(&selector);
    let pod =
        workload_pod(kube.list::<Pod>(&selector).await?).ok_or_else(|| Error::NoWorkloadPod {
            namespace: ns.to_string(),
            service: service.to_string(),
            selector: selector.clone(),
        })?;
    let container = workload_env::container(&pod, args.container.as_deref())?;
    let needs = workload_env::needs(container, args.env_secrets);
    let mut src = Sources {
        with_secrets: args.env_secrets,
        ..Default::default()
    };
    for name in needs.config_maps {
        let cm = kube.get::<ConfigMap>(&name).await?;
        src.config_maps.insert(name, cm);
    }
    for name in needs.secrets {
        let secret = match kube.get::<Secret>(&name).await {
            Err(Error::Api { source, .. }) if crate::error::status_code(&source) == Some(403) => {
                return Err(Error::SecretsForbidden {
                    namespace: ns.to_string(),
                    name,
                })
            }
            other => other?,
        };
        src.secrets.insert(name, secret);
    }
    let env = workload_env::resolve(&pod, container, &src)?;
    if let Some(w) = env.warning() {
        ctx.progress.warn(w);
    }
    let from = format!(
        "container {} of pod {ns}/{}",
        container.name,
        pod.name_any()
    );
    match &args.env_file {
        Some(path) => {
            write_file(path, &workload_env::dotenv(&env.vars))?;
            ctx.progress.done(format!(
                "Wrote the environment of {from} ({} variables) to {}",
                env.vars.len(),
                path.display()
            ));
        }
        None => ctx.progress.done(format!(
            "Took the environment of {from} ({} variables)",
            env.vars.len()
        )),
    }
    Ok(env.vars)
}

/// The pod to read: a running one that is not being deleted if any, by name for a stable pick.
fn workload_pod(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.sort_by_key(|p| {
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        (
            p.metadata.deletion_timestamp.is_some(),
            !running,
            p.name_any(),
        )
    });
    pods.into_iter().next()
}

/// Writes `text` to `path`, readable by its owner only (also when the file existed).
fn write_file(path: &Path, text: &str) -> Result<()> {
    let err = |source| Error::EnvFile {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(name: &str, phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_pod_read_is_a_running_one_not_on_its_way_out() {
        let pick = |pods: Vec<Pod>| workload_pod(pods).map(|p| p.name_any());
        assert_eq!(
            pick(vec![
                pod("a-old", "Running", true),
                pod("b-pending", "Pending", false),
                pod("d-running", "Running", false),
                pod("c-running", "Running", false),
            ]),
            Some("c-running".into())
        );
        assert_eq!(
            pick(vec![
                pod("a-old", "Running", true),
                pod("b", "Pending", false)
            ]),
            Some("b".into())
        );
        assert_eq!(pick(vec![]), None);
    }
}
