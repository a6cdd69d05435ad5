//! Team defaults as README's "On your own cluster" sets them: `ktx config set` of the images
//! (and `skipPortChecking`) in a developer's config file, or the chart's `defaults` published
//! as ConfigMap `ktx-defaults`; then `ktx mesh` with no image flag. And `e2e/images.sh --push`
//! to a registry on loopback (Debian's docker-registry) that wants a login: refused without
//! one, pushed after README's `buildah login`.
//!
//! The images are the locally loaded ones given second names of each test's own
//! (`e2e/cluster tag`, e.g. `ktx.local/team-file/ktx-router:configured`): ktx's built-in
//! defaults are the loaded images' usual names, so only a pod running the second name proves
//! that the configured image reached it. `skipPortChecking` from the same layer (no "Nothing
//! listens" warning for a LOCAL port that is closed at start) and `ktx config show` naming the
//! layer of each value are checked too. Needs the `e2e/cluster` cluster (for the tags).

#[path = "support/chart.rs"]
mod chart;
#[path = "support/clients.rs"]
mod clients;
#[path = "support/ktx.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use chart::{chart_dir, helm_ok, repo_root};
use clients::{ask_from_pods, Ask};
use ktx_e2e::{image, secs, testbackend_manifest, Cluster, Namespace};
use support::{free_port, ktx, local_backend_on, service_fingerprint, Proc};

/// A fresh `$XDG_CONFIG_HOME` for the test's ktx.
fn config_home(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ktx-e2e-config-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("a temporary directory");
    p
}

/// `ktx -n NS ARGS` with `home` as its config directory.
fn ktx_in(ns: &Namespace, home: &Path, args: &[&str]) -> Command {
    let mut cmd = ktx(ns, args);
    cmd.env("XDG_CONFIG_HOME", home);
    for v in ["KTX_ROUTER_IMAGE", "KTX_SHADOW_IMAGE", "KTX_PROFILE"] {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs a short ktx command; its stdout.
fn ktx_ok(ns: &Namespace, home: &Path, args: &[&str]) -> String {
    let out = ktx_in(ns, home, args).output().expect("ktx runs");
    assert!(
        out.status.success(),
        "ktx {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `from` of KEY in `ktx config show -o json`.
fn shown_from(json: &str, key: &str) -> String {
    let needle = format!("\"key\": \"{key}\"");
    let at = json
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at..];
    let from = rest.find("\"from\": \"").expect("a from field") + 9;
    rest[from..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The image of the first container of `kind/name` (`path`: where its containers are).
fn image_of(ns: &Namespace, kind: &str, name: &str) -> String {
    let path = match kind {
        "pod" => "jsonpath={.spec.containers[0].image}",
        _ => "jsonpath={.spec.template.spec.containers[0].image}",
    };
    ns.kubectl(&["get", kind, name, "-o", path])
        .trim()
        .to_string()
}

/// The loaded router and shadow images under a second name of this test's own, so that a pod
/// running it shows the configured image reached ktx (the built-in defaults are the loaded
/// images' usual names).
struct TeamImages {
    router: String,
    shadow: String,
}

fn team_images(test: &str) -> TeamImages {
    let tag = |name: &str| {
        let team = format!("ktx.local/team-{test}/{name}:configured");
        assert_ne!(team, image(name));
        let out = Command::new(repo_root().join("e2e/cluster"))
            .args(["tag", &image(name), &team])
            .output()
            .expect("e2e/cluster tag runs");
        assert!(
            out.status.success(),
            "e2e/cluster tag {} {team}: {}",
            image(name),
            String::from_utf8_lossy(&out.stderr)
        );
        team
    };
    TeamImages {
        router: tag("ktx-router"),
        shadow: tag("ktx-shadow"),
    }
}

/// `ktx mesh orders` with no image flag, the developer's process not started yet; checks the
/// layer's `skipPortChecking` held, then starts the process and sees a marked request reach it.
fn mesh_without_flags(ns: &Namespace, home: &Path, images: &TeamImages) {
    ns.apply(&testbackend_manifest("orders", "original", 1));
    ns.wait_deployment("orders", secs(120));
    let before = service_fingerprint(ns, "orders");
    let port = free_port();
    let expose = format!("{port}:8080");
    let mut mesh = Proc::spawn(
        "ktx mesh (defaults)",
        &mut ktx_in(
            ns,
            home,
            &[
                "mesh",
                "orders",
                "--expose",
                &expose,
                "--versionMark",
                "cfg",
                "-o",
                "json",
            ],
        ),
    );
    let json = mesh.wait_line(true, "\"command\":\"mesh\"", secs(180));
    assert!(json.contains("VERSION: cfg"), "{json}");
    assert_eq!(
        image_of(ns, "deployment", "orders-ktx-router"),
        images.router
    );
    assert_eq!(image_of(ns, "pod", "orders-ktx-mesh-cfg"), images.shadow);
    let _dev = local_backend_on("developer", port);
    let ip = ns.cluster_ip("orders");
    let addr = format!("{ip}:8080");
    ask_from_pods(
        ns,
        &[Ask {
            pod: "marked",
            addr: &addr,
            calls: &["http1"],
            header: Some("VERSION=cfg"),
            expect: "developer",
        }],
    );
    mesh.interrupt();
    let (ok, out) = mesh.wait_exit(secs(90));
    assert!(ok, "ktx mesh did not end cleanly after Ctrl-C:\n{out}");
    assert!(
        !out.contains("Nothing listens"),
        "skipPortChecking from the layer did not reach ktx mesh:\n{out}"
    );
    assert_eq!(service_fingerprint(ns, "orders"), before, "{out}");
    support::assert_nothing_left(ns, secs(60));
}

#[test]
fn ktx_config_set_then_mesh_without_image_flags() {
    let Some(cluster) = Cluster::from_env("config_file") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("config-file");
    let home = config_home("file");
    let images = team_images("file");
    ktx_ok(
        &ns,
        &home,
        &["config", "set", "routerImage", &images.router],
    );
    ktx_ok(
        &ns,
        &home,
        &["config", "set", "shadowImage", &images.shadow],
    );
    ktx_ok(&ns, &home, &["config", "set", "skipPortChecking", "true"]);
    let show = ktx_ok(&ns, &home, &["-o", "json", "config", "show"]);
    let file = home.join("ktx/config.yaml").display().to_string();
    for key in ["routerImage", "shadowImage", "skipPortChecking"] {
        assert_eq!(shown_from(&show, key), format!("file {file}"), "{show}");
    }
    mesh_without_flags(&ns, &home, &images);
}

#[test]
fn the_charts_defaults_reach_ktx_mesh_without_flags() {
    let Some(cluster) = Cluster::from_env("config_chart_defaults") else {
        return;
    };
    support::build();
    let ns = cluster.namespace("config-chart");
    let chart = chart_dir().display().to_string();
    let team = team_images("chart");
    let router = format!("defaults.routerImage={}", team.router);
    let shadow = format!("defaults.shadowImage={}", team.shadow);
    helm_ok(&[
        "install",
        "ktx",
        &chart,
        "--namespace",
        ns.name(),
        "--set",
        "janitor.enabled=false",
        "--set",
        &router,
        "--set",
        &shadow,
        "--set",
        "defaults.skipPortChecking=true",
        "--wait",
    ]);
    let data = ns.kubectl(&["get", "configmap", "ktx-defaults", "-o", "jsonpath={.data}"]);
    assert!(data.contains("skipPortChecking"), "{data}");
    let home = config_home("chart");
    let show = ktx_ok(&ns, &home, &["-o", "json", "config", "show"]);
    let cm = format!("ConfigMap {}/ktx-defaults", ns.name());
    for key in ["routerImage", "shadowImage", "skipPortChecking"] {
        assert_eq!(shown_from(&show, key), cm, "{show}");
    }
    // A developer's own file still wins over the team's.
    let own = team_images("chart-file");
    ktx_ok(&ns, &home, &["config", "set", "timeout", "150s"]);
    ktx_ok(&ns, &home, &["config", "set", "routerImage", &own.router]);
    let show = ktx_ok(&ns, &home, &["-o", "json", "config", "show"]);
    assert!(
        shown_from(&show, "routerImage").starts_with("file "),
        "{show}"
    );
    assert_eq!(shown_from(&show, "shadowImage"), cm, "{show}");
    let expected = TeamImages {
        router: own.router,
        shadow: team.shadow,
    };
    mesh_without_flags(&ns, &home, &expected);
    helm_ok(&["uninstall", "ktx", "--namespace", ns.name(), "--wait"]);
}

#[test]
fn images_push_to_a_registry() {
    let Some(_cluster) = Cluster::from_env("config_images_push") else {
        return;
    };
    let registry = Path::new("/usr/bin/docker-registry");
    if !registry.exists() || !Path::new("/usr/bin/htpasswd").exists() {
        let ok = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "docker-registry",
                "apache2-utils",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot install Debian's docker-registry and htpasswd for the push test"
        );
    }
    let dir = config_home("registry");
    let port = free_port();
    // A registry that wants a login, as a team's does: README's `buildah login` first.
    let (user, password) = ("ktx-ci", "not-a-real-secret");
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd runs");
    assert!(htpasswd.status.success());
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: ktx-e2e\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ),
    )
    .expect("registry config");
    // buildah keeps logins in this file; the test's own, so nothing of the machine's changes.
    let authfile = dir.join("auth.json");
    let mut reg = Proc::spawn(
        "docker-registry",
        Command::new(registry)
            .arg("serve")
            .arg(dir.join("config.yml")),
    );
    reg.wait_line(false, "listening on", secs(30));
    // busybox: no Rust build needed; the push path is the same for every image.
    let push = || {
        Command::new(repo_root().join("e2e/images.sh"))
            .args([
                "--no-load",
                "--push",
                &format!("127.0.0.1:{port}/team"),
                "--insecure",
                "busybox",
            ])
            .env("REGISTRY_AUTH_FILE", &authfile)
            .output()
            .expect("e2e/images.sh runs")
    };
    let refused = push();
    assert!(
        !refused.status.success(),
        "pushed to a registry that wants a login without one"
    );
    let login = Command::new("buildah")
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            user,
            "--password-stdin",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env("REGISTRY_AUTH_FILE", &authfile)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("piped")
                .write_all(password.as_bytes())?;
            c.wait_with_output()
        })
        .expect("buildah login runs");
    assert!(
        login.status.success(),
        "buildah login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let out = push();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let tag = std::env::var("KTX_IMAGE_TAG").unwrap_or_else(|_| "dev".into());
    assert!(
        stderr.contains(&format!("pushed 127.0.0.1:{port}/team/busybox:{tag}")),
        "{stderr}"
    );
    let tags = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-u",
            &format!("{user}:{password}"),
        ])
        .arg(format!("http://127.0.0.1:{port}/v2/team/busybox/tags/list"))
        .output()
        .expect("curl runs");
    let tags = String::from_utf8_lossy(&tags.stdout);
    assert!(tags.contains(&format!("\"{tag}\"")), "{tags}");
    let _ = std::fs::remove_dir_all(&dir);
}
