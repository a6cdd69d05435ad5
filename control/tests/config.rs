//! `ktx config` as a user runs it: the real binary on a private config directory, the
//! environment layer included (it cannot be set in-process without racing other tests), and
//! the namespace's ConfigMap `ktx-defaults` read from a small HTTP API server on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use ktx::config::keys::Keys;
use ktx::config::namespace;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh `$XDG_CONFIG_HOME`.
fn home() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "ktx-config-bin-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs `ktx ARGS` with only `env` (and the config home) in its environment.
fn ktx(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ktx"))
        .env_clear()
        .env("XDG_CONFIG_HOME", home)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

fn ok(home: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = ktx(home, env, args);
    assert!(
        out.status.success(),
        "ktx {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(home: &Path, args: &[&str]) -> String {
    let out = ktx(home, &[], args);
    assert!(!out.status.success(), "ktx {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// `(value, from)` of KEY in `ktx config show -o json`.
fn shown(json: &str, key: &str) -> (String, String) {
    let rows: serde_json::Value = serde_json::from_str(json).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    (
        row["value"].as_str().unwrap().to_string(),
        row["from"].as_str().unwrap().to_string(),
    )
}

fn show(home: &Path, env: &[(&str, &str)], before: &[&str]) -> String {
    let mut args = before.to_vec();
    args.extend(["-o", "json", "config", "show", "--local"]);
    ok(home, env, &args)
}

#[test]
fn each_layer_beats_the_next_and_show_says_which() {
    let h = home();
    let file = h.join("ktx/config.yaml").display().to_string();
    ok(&h, &[], &["config", "set", "routerImage", "file/r:1"]);
    ok(&h, &[], &["config", "profile", "save", "team"]);
    ok(&h, &[], &["config", "set", "routerImage", "file/r:2"]);
    // file > built-in default
    let s = show(&h, &[], &[]);
    assert_eq!(
        shown(&s, "routerImage"),
        ("file/r:2".into(), format!("file {file}"))
    );
    assert_eq!(
        shown(&s, "shadowImage"),
        ("ktx.local/ktx-shadow:dev".into(), "built-in default".into())
    );
    assert_eq!(shown(&s, "namespace"), ("-".into(), "unset".into()));
    // profile > file, by flag or by environment
    for (env, flag) in [
        (vec![], vec!["--profile", "team"]),
        (vec![("KTX_PROFILE", "team")], vec![]),
    ] {
        let s = show(&h, &env, &flag);
        assert_eq!(
            shown(&s, "routerImage"),
            ("file/r:1".into(), "profile team".into())
        );
    }
    // environment > profile
    let env = [("KTX_PROFILE", "team"), ("KTX_ROUTER_IMAGE", "env/r:1")];
    let s = show(&h, &env, &[]);
    assert_eq!(
        shown(&s, "routerImage"),
        ("env/r:1".into(), "environment $KTX_ROUTER_IMAGE".into())
    );
    // flag > environment
    let s = show(&h, &env, &["--routerImage", "flag/r:1"]);
    assert_eq!(shown(&s, "routerImage"), ("flag/r:1".into(), "flag".into()));
}

#[test]
fn set_get_unset_in_both_spellings() {
    let h = home();
    ok(&h, &[], &["config", "set", "router-image", "a/r:1"]);
    ok(&h, &[], &["config", "set", "shadowImage=a/s:1"]);
    ok(&h, &[], &["config", "set", "mesh.skipPortChecking", "true"]);
    assert_eq!(ok(&h, &[], &["config", "get", "routerImage"]), "a/r:1\n");
    assert_eq!(ok(&h, &[], &["config", "get", "shadow-image"]), "a/s:1\n");
    let text = std::fs::read_to_string(h.join("ktx/config.yaml")).unwrap();
    assert!(
        text.contains("routerImage: a/r:1\nshadowImage: a/s:1\nskipPortChecking: 'true'\n"),
        "{text}"
    );
    ok(&h, &[], &["config", "unset", "routerImage"]);
    assert_eq!(ok(&h, &[], &["config", "get", "routerImage"]), "");
    assert_eq!(ok(&h, &[], &["config", "get", "shadowImage"]), "a/s:1\n");
    ok(&h, &[], &["config", "unset", "--all"]);
    assert_eq!(ok(&h, &[], &["config", "get", "shadowImage"]), "");
}

#[test]
fn an_unknown_key_or_a_bad_value_is_refused_with_the_keys() {
    let h = home();
    let e = fails(&h, &["config", "set", "routerImag", "x"]);
    assert!(e.contains("unknown key \"routerImag\""), "{e}");
    assert!(e.contains("routerImage, shadowImage"), "{e}");
    let e = fails(&h, &["config", "set", "timeout", "soon"]);
    assert!(e.contains("timeout: invalid value 'soon'"), "{e}");
    let e = fails(&h, &["config", "get", "colour"]);
    assert!(e.contains("unknown key \"colour\""), "{e}");
    assert!(!h.join("ktx/config.yaml").exists(), "nothing written");
}

#[test]
fn profiles_save_load_list_drop_and_kt_connect_aliases() {
    let h = home();
    ok(&h, &[], &["config", "set", "namespace", "staging"]);
    ok(&h, &[], &["config", "profile", "save", "staging"]);
    ok(&h, &[], &["config", "set", "namespace", "prod"]);
    ok(&h, &[], &["config", "save-profile", "prod"]);
    assert_eq!(
        ok(&h, &[], &["config", "profile", "list"]),
        "prod\nstaging\n"
    );
    assert_eq!(
        ok(&h, &[], &["--profile", "prod", "config", "list-profile"]),
        "prod (active)\nstaging\n"
    );
    // load: the profile replaces the file (kt-connect's load-profile); --dryRun only prints.
    let printed = ok(&h, &[], &["config", "load-profile", "staging", "--dryRun"]);
    assert!(printed.contains("namespace: staging"), "{printed}");
    assert_eq!(ok(&h, &[], &["config", "get", "namespace"]), "prod\n");
    ok(&h, &[], &["config", "profile", "load", "staging"]);
    assert_eq!(ok(&h, &[], &["config", "get", "namespace"]), "staging\n");
    ok(&h, &[], &["config", "load-profile", "prod"]);
    assert_eq!(ok(&h, &[], &["config", "get", "namespace"]), "prod\n");
    ok(&h, &[], &["config", "drop-profile", "prod"]);
    ok(&h, &[], &["config", "profile", "drop", "staging"]);
    assert_eq!(ok(&h, &[], &["config", "profile", "list"]), "");
    let e = fails(&h, &["config", "profile", "load", "prod"]);
    assert!(
        e.contains("no profile \"prod\" (saved profiles: none)"),
        "{e}"
    );
    let e = fails(&h, &["config", "profile", "save", "../x"]);
    assert!(e.contains("not a profile name"), "{e}");
}

#[test]
fn a_malformed_file_is_a_clear_error_and_config_can_still_repair_it() {
    let h = home();
    std::fs::create_dir_all(h.join("ktx")).unwrap();
    let file = h.join("ktx/config.yaml");
    std::fs::write(&file, "routerImage: a\nshadowImage: [b\n").unwrap();
    let e = fails(&h, &["status"]);
    assert!(
        e.starts_with(&format!("ktx: {} line 3: not valid YAML", file.display())),
        "{e}"
    );
    let e = fails(&h, &["config", "set", "routerImage", "c"]);
    assert!(e.contains("line 3: not valid YAML"), "{e}");
    let out = ktx(&h, &[], &["config", "show", "--local"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: not used:"));
    ok(&h, &[], &["config", "unset", "--all"]);
    ok(&h, &[], &["config", "set", "routerImage", "c"]);
}

#[test]
fn a_value_from_the_file_reaches_the_command() {
    let h = home();
    let kubeconfig = h.join("no-such-kubeconfig");
    ok(
        &h,
        &[],
        &["config", "set", "kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let e = fails(&h, &["status"]);
    assert!(
        e.contains("cannot load the kubeconfig") && e.contains(kubeconfig.to_str().unwrap()),
        "{e}"
    );
}

/// An API server on loopback that answers GET of ConfigMap shop/ktx-defaults with `status`
/// and `body`, and 404 to everything else. Returns a kubeconfig for it.
async fn api(status: u16, body: String) -> (PathBuf, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // At most a handful of requests per test.
        for _ in 0..16 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&req);
            let path = head.split(' ').nth(1).unwrap_or_default();
            let (code, text) = if path
                .starts_with("/api/v1/namespaces/shop/configmaps/ktx-defaults")
            {
                (status, body.clone())
            } else {
                (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string())
            };
            let reply = format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    let kubeconfig = home().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{addr}\" }}\n\
             users:\n- name: u\n  user: {{ token: t }}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u, namespace: shop }}\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    (kubeconfig, task)
}

fn configmap(data: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"ktx-defaults","namespace":"shop","uid":"u1","resourceVersion":"1"}},"data":{data}}}"#
    )
}

async fn kube(kubeconfig: &Path) -> ktx::cluster::api::Kube {
    let cli = <ktx::cli::Cli as clap::Parser>::try_parse_from([
        "ktx",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "status",
    ])
    .unwrap();
    ktx::cluster::api::Kube::connect(&cli.global).await.unwrap()
}

#[tokio::test]
async fn the_namespace_configmap_is_read_missing_or_forbidden_is_silent() {
    let keys = Keys::of_cli();
    let (kc, task) = api(
        200,
        configmap(r#"{"routerImage":"team/r:1","colour":"blue"}"#),
    )
    .await;
    let (values, warnings) = namespace::read(&kube(&kc).await, &keys).await.unwrap();
    assert_eq!(values.get("router_image").unwrap().value, "team/r:1");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("ConfigMap shop/ktx-defaults: key \"colour\""));
    task.abort();
    let forbidden =
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}"#;
    for (code, body) in [(404, "{}".to_string()), (403, forbidden.to_string())] {
        let (kc, task) = api(code, body).await;
        assert!(
            namespace::read(&kube(&kc).await, &keys).await.is_none(),
            "{code}"
        );
        task.abort();
    }
}

#[tokio::test]
async fn show_names_the_namespace_configmap_under_the_file() {
    let (kc, task) = api(
        200,
        configmap(r#"{"routerImage":"team/r:1","shadowImage":"team/s:1","namespace":"elsewhere"}"#),
    )
    .await;
    let h = home();
    let kc = kc.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        ok(&h, &[], &["config", "set", "routerImage", "file/r:1"]);
        let out = ktx(
            &h,
            &[],
            &["--kubeconfig", &kc, "-o", "json", "config", "show"],
        );
        assert!(out.status.success());
        out
    })
    .await
    .unwrap();
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(shown(&json, "routerImage").1.starts_with("file "));
    assert_eq!(
        shown(&json, "shadowImage"),
        ("team/s:1".into(), "ConfigMap shop/ktx-defaults".into())
    );
    assert_eq!(shown(&json, "namespace"), ("-".into(), "unset".into()));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("key \"namespace\" skipped"), "{stderr}");
    task.abort();
}
