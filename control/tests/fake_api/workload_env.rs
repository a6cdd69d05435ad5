//! `--env-file` and `-- CMD` on the fake cluster: the file holds the workload container's
//! environment (ConfigMap refs resolved, Secret refs only with `--env-secrets`), CMD runs with
//! it once the session is up, the session ends with CMD and ktx's result is CMD's status, a
//! stop request reaches CMD before the teardown — and every time the namespace is back as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource, Pod, PodSpec,
    SecretKeySelector,
};

use super::server::Fake;
use super::support::{self, cli, meta, team_namespace, team_secret, Snapshot};

const PATIENCE: Duration = Duration::from_secs(30);

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn var_from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    }
}

/// The team's Service `tb` whose pod's container has literals, a ConfigMap ref and a Secret ref.
fn scene() -> (Fake, Snapshot) {
    let (fake, _) = team_namespace("tb");
    fake.seed(&ConfigMap {
        metadata: meta("tb-settings", &[]),
        data: Some(BTreeMap::from([(
            "db.host".to_string(),
            "db.shop".to_string(),
        )])),
        ..Default::default()
    });
    team_secret(&fake, "tb-db");
    fake.replace(&Pod {
        metadata: meta("tb-7d9f-abcde", &[("app", "tb")]),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("team/app:1".into()),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    name: Some("http".into()),
                    ..Default::default()
                }]),
                env: Some(vec![
                    var("GREETING", "hello from tb"),
                    var_from(
                        "DB_HOST",
                        EnvVarSource {
                            config_map_key_ref: Some(ConfigMapKeySelector {
                                name: "tb-settings".into(),
                                key: "db.host".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ),
                    var_from(
                        "DB_PASSWORD",
                        EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "tb-db".into(),
                                key: "password".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    });
    let before = fake.snapshot();
    (fake, before)
}

/// A directory of this test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("ktx-fake-env-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("a temp dir");
        Dir(p)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `args` on `fake` to its end (the command's exit), within [`PATIENCE`].
async fn run(fake: &Fake, args: &[&str]) -> (ktx::Result<()>, Vec<String>) {
    let cli = cli(args);
    let ctx = support::ctx(fake, &cli);
    let (shutdown, _stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let r = tokio::time::timeout(PATIENCE, support::run_ctx(&ctx, &cli, &shutdown))
        .await
        .expect("the session ends with its command");
    (r, ctx.progress.lines())
}

#[tokio::test]
async fn the_env_file_holds_the_workload_env_and_the_session_ends_with_the_command() {
    let (fake, before) = scene();
    let dir = Dir::new("mesh");
    let file = dir.path("tb.env");
    // The command checks that it got the workload's variables, and exits 3.
    let (r, lines) = run(
        &fake,
        &[
            "mesh",
            "tb",
            "--expose",
            "3001:80",
            "--versionMark",
            "ci",
            "--env-file",
            &file,
            "--",
            "sh",
            "-c",
            r#"[ "$DB_HOST" = db.shop ] && [ "$GREETING" = "hello from tb" ] && [ -z "$DB_PASSWORD" ] && exit 3; exit 9"#,
        ],
    )
    .await;
    match r {
        Err(ktx::Error::CommandExited { command, code: 3 }) => assert_eq!(command, "sh"),
        other => panic!("expected the command's status 3, got {other:?}\n{lines:#?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "GREETING='hello from tb'\nDB_HOST=db.shop\n"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "workload variables left out — from Secrets (add --env-secrets to include them): DB_PASSWORD"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Session is up")),
        "the command ran only once the session was up: {lines:#?}"
    );
    assert_eq!(fake.snapshot(), before, "the namespace is back as it was");
}

#[tokio::test]
async fn env_secrets_adds_the_secret_refs() {
    let (fake, before) = scene();
    let dir = Dir::new("secrets");
    let file = dir.path("tb.env");
    let (r, lines) = run(
        &fake,
        &[
            "exchange",
            "tb",
            "--expose",
            "3001:80",
            "--env-file",
            &file,
            "--env-secrets",
            "--",
            "true",
        ],
    )
    .await;
    assert!(r.is_ok(), "{r:?}\n{lines:#?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "GREETING='hello from tb'\nDB_HOST=db.shop\nDB_PASSWORD=hunter2\n"
    );
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn env_secrets_without_the_right_is_refused_before_anything_is_made() {
    let (fake, before) = scene();
    fake.forbid("secrets", "get");
    let dir = Dir::new("forbidden");
    let file = dir.path("tb.env");
    let (r, _) = run(
        &fake,
        &[
            "mesh",
            "tb",
            "--expose",
            "3001:80",
            "--env-file",
            &file,
            "--env-secrets",
        ],
    )
    .await;
    let e = r.expect_err("refused").to_string();
    assert!(
        e.contains("you may not read Secret team/tb-db (HTTP 403)")
            && e.contains("The workload's environment"),
        "{e}"
    );
    assert!(!std::path::Path::new(&file).exists(), "no file written");
    assert_eq!(fake.writes(), 0, "nothing was written to the cluster");
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn a_missing_required_configmap_key_is_named() {
    let (fake, _) = scene();
    fake.edit("configmaps", "tb-settings", |cm| {
        cm["data"] = serde_json::json!({ "other": "x" })
    });
    let before = fake.snapshot();
    let (r, _) = run(&fake, &["mesh", "tb", "--expose", "3001:80", "--", "true"]).await;
    let e = r.expect_err("refused").to_string();
    assert_eq!(
        e,
        "variable DB_HOST refers to key \"db.host\" of ConfigMap tb-settings, which it does not have (and is not optional)"
    );
    assert_eq!(fake.writes(), 0);
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn a_stop_request_reaches_the_command_before_the_teardown() {
    let (fake, before) = scene();
    let dir = Dir::new("stop");
    let armed = dir.path("armed");
    let cli = cli(&[
        "mesh",
        "tb",
        "--expose",
        "3001:80",
        "--",
        "sh",
        "-c",
        &format!("trap 'exit 5' TERM; touch {armed}; while :; do sleep 0.05; done"),
    ]);
    let ctx = support::ctx(&fake, &cli);
    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    let progress = ctx.progress.clone();
    let done = tokio::spawn(async move { support::run_ctx(&ctx, &cli, &shutdown).await });
    // The command is running with its trap set.
    for _ in 0..3000 {
        if std::path::Path::new(&armed).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        std::path::Path::new(&armed).exists(),
        "{:#?}",
        progress.lines()
    );
    let calls_before_stop = fake.calls().len();
    stop.fire();
    let r = tokio::time::timeout(PATIENCE, done)
        .await
        .expect("teardown in time")
        .expect("the session task ran");
    // Exit 5 is the trap's: SIGTERM reached the command (a kill would be 137).
    assert!(
        matches!(r, Err(ktx::Error::CommandExited { code: 5, .. })),
        "{r:?}"
    );
    let lines = progress.lines();
    let stopping = lines
        .iter()
        .position(|l| l.contains("Stopping sh (SIGTERM)"))
        .expect("the command is stopped");
    let ending = lines
        .iter()
        .position(|l| l.contains("Ending the session"))
        .expect("then the session ends");
    assert!(stopping < ending, "{lines:#?}");
    assert!(fake.calls().len() > calls_before_stop);
    assert_eq!(fake.snapshot(), before);
}

#[tokio::test]
async fn a_stop_request_while_reading_the_environment_ends_before_anything_is_made() {
    let (fake, before) = scene();
    let cli = cli(&["mesh", "tb", "--expose", "3001:80", "--", "true"]);
    let ctx = support::ctx(&fake, &cli);
    let (shutdown, stop) = ktx::lifecycle::shutdown::Shutdown::manual();
    stop.fire();
    let r = support::run_ctx(&ctx, &cli, &shutdown).await;
    assert!(matches!(r, Err(ktx::Error::Interrupted)), "{r:?}");
    assert!(fake.calls().is_empty(), "{:#?}", fake.calls());
    assert_eq!(fake.snapshot(), before);
}
