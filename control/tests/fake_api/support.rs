//! Scenes for the fake cluster: a team's namespace with its own Service, pods and workload, and
//! a ktx context that talks to the fake.

use std::collections::BTreeMap;

use clap::Parser;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodSpec, PodTemplateSpec, Secret, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use ktx::cli::{Cli, Command};
use ktx::cluster::api::Kube;
use ktx::lifecycle::flow::Ctx;
use ktx::lifecycle::liveness::Window;
use ktx::progress::Progress;

use std::sync::Arc;
use std::time::Duration;

use super::dialer::ShadowDialer;
use super::server::{Fake, NS};

pub fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

fn app(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), service.to_string())])
}

/// The team's Service `service` (port 80 → 8080), one pod behind it and the Deployment that
/// made the pod (2 replicas).
pub fn team_service(fake: &Fake, service: &str) {
    fake.seed(&Service {
        metadata: meta(service, &[("team", "shop")]),
        spec: Some(ServiceSpec {
            selector: Some(app(service)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    });
    let container = Container {
        name: "app".into(),
        image: Some("team/app:1".into()),
        ports: Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    fake.seed(&Pod {
        metadata: meta(&format!("{service}-7d9f-abcde"), &[("app", service)]),
        spec: Some(PodSpec {
            containers: vec![container.clone()],
            ..Default::default()
        }),
        status: None,
    });
    fake.seed(&Deployment {
        metadata: meta(service, &[]),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(app(service)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(app(service)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    });
}

/// A fresh namespace holding the team's Service `service` ([`team_service`]), and how it looked
/// before any command ran.
pub fn team_namespace(service: &str) -> (Fake, Snapshot) {
    let fake = Fake::new();
    team_service(&fake, service);
    let before = fake.snapshot();
    (fake, before)
}

/// Every object of the fake namespace, as [`Fake::snapshot`] gives it.
pub type Snapshot = BTreeMap<(String, String), serde_json::Value>;

/// A Secret of the team's (not ktx's).
pub fn team_secret(fake: &Fake, name: &str) -> String {
    fake.seed(&Secret {
        metadata: meta(name, &[("team", "shop")]),
        string_data: None,
        data: Some(BTreeMap::from([(
            "password".to_string(),
            k8s_openapi::ByteString(b"hunter2".to_vec()),
        )])),
        ..Default::default()
    })
}

/// A Lease anyone allowed to create Leases can make: ktx's labels, a session long expired.
pub fn forged_lease(fake: &Fake, name: &str, service: &str, duration_secs: i32) -> String {
    let old = MicroTime(Timestamp::from_second(1_600_000_000).expect("a valid time"));
    fake.seed(&Lease {
        metadata: meta(
            name,
            &[
                ("app.kubernetes.io/managed-by", "ktx"),
                ("ktx.dev/service", service),
                ("ktx.dev/role", "session"),
            ],
        ),
        spec: Some(LeaseSpec {
            holder_identity: Some("mallory@somewhere".into()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: Some(old.clone()),
            renew_time: Some(old),
            ..Default::default()
        }),
    })
}

/// `ktx mesh` of the team's Service `tb` (`team_service`), mark `VERSION: foobar`, target port
/// 80 exposed from local port 3001: the session most tests start.
pub const MESH: &[&str] = &[
    "mesh",
    "tb",
    "--versionMark",
    "foobar",
    "--expose",
    "3001:80",
];

/// A ktx command line, parsed as `ktx` parses it.
pub fn cli(args: &[&str]) -> Cli {
    // --timeout bounds the wait for a name taken by someone else (the name-clash test).
    let mut argv = vec!["ktx", "-n", NS, "--timeout", "3s"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("a valid command line")
}

/// How long these tests watch a Lease that looks expired before its session counts as dead:
/// the judgement is the one every command makes (a renewTime that stood still for the whole
/// window), over a window of milliseconds instead of the Lease's 15 s.
pub const LIVENESS: Window = Window {
    lease_duration: Some(Duration::from_millis(300)),
    grace: Duration::from_millis(100),
    poll: Duration::from_millis(50),
};

/// What a command needs, talking to `fake` (and to its shadows in-process); progress lines are
/// recorded.
pub fn ctx(fake: &Fake, cli: &Cli) -> Ctx {
    let mut kube = Kube::new(fake.client(), NS);
    kube.dialer = Some(Arc::new(ShadowDialer(fake.clone())));
    kube.liveness = LIVENESS;
    Ctx {
        kube,
        global: cli.global.clone(),
        holder: "alice@laptop".into(),
        progress: Progress::recording(),
    }
}

/// Runs one command of `cli` to its end against `fake` (sessions until `shutdown` fires).
pub async fn run(
    fake: &Fake,
    cli: &Cli,
    shutdown: &ktx::lifecycle::shutdown::Shutdown,
) -> ktx::Result<()> {
    run_ctx(&ctx(fake, cli), cli, shutdown).await
}

/// [`run`] with a context made by [`ctx`].
pub async fn run_ctx(
    ctx: &Ctx,
    cli: &Cli,
    shutdown: &ktx::lifecycle::shutdown::Shutdown,
) -> ktx::Result<()> {
    let ctx = ctx.clone();
    match &cli.command {
        Command::Mesh(a) => ktx::commands::mesh::run(&ctx, a, shutdown).await,
        Command::Exchange(a) => ktx::commands::exchange::run(&ctx, a, shutdown).await,
        Command::Preview(a) => ktx::commands::preview::run(&ctx, a, shutdown).await,
        Command::Clean(a) => ktx::commands::clean::run(&ctx, a).await,
        Command::Recover(a) => ktx::commands::recover::run(&ctx, a).await,
        Command::Janitor(a) => ktx::commands::janitor::run(&ctx, a, shutdown).await,
        other => panic!("not a command these tests run: {other:?}"),
    }
}

/// How long a session may take to come up, or to be torn down, on the fake.
const UP_PATIENCE: Duration = Duration::from_secs(30);

/// A session running in the background on `fake`.
pub struct Running {
    stop: ktx::lifecycle::shutdown::Trigger,
    done: tokio::task::JoinHandle<ktx::Result<()>>,
}

/// Starts `args` on `fake` and waits until the session is up.
pub async fn start(fake: &Fake, args: &[&str]) -> Running {
    let cli = cli(args);
    let ctx = ctx(fake, &cli);
    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let progress = ctx.progress.clone();
    let mut done = tokio::spawn(async move { run_ctx(&ctx, &cli, &shutdown).await });
    tokio::select! {
        () = progress.until(|l| l.contains("Session is up")) => {}
        r = &mut done => panic!("{args:?} ended before it was up: {r:?}\n{:#?}", progress.lines()),
        () = tokio::time::sleep(UP_PATIENCE) => panic!("{args:?} is up in time: {:#?}", progress.lines()),
    }
    Running { stop, done }
}

impl Running {
    /// Ends the session (as Ctrl-C would) and waits for its teardown.
    pub async fn end(self) {
        self.stop.fire();
        tokio::time::timeout(UP_PATIENCE, self.done)
            .await
            .expect("teardown in time")
            .expect("the session task ran")
            .expect("the session ends cleanly");
    }

    /// Waits for the session to end by itself (its Lease gone, say), with its outcome.
    pub async fn ended(self) -> ktx::Result<()> {
        tokio::time::timeout(UP_PATIENCE, self.done)
            .await
            .expect("the session ends by itself in time")
            .expect("the session task ran")
    }

    /// The laptop dies: nothing is torn down, the Lease stops being renewed.
    pub fn crash(self) {
        self.done.abort();
    }
}
