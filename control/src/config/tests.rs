//! The layers in order, each beating the next; the file format and its errors; profiles'
//! files; the namespace ConfigMap's entries. (Environment variables are tested on the binary,
//! `tests/config.rs`: setting them here would race the other tests.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::file::{self, Paths, Values};
use super::keys::{Keys, Kind};
use super::layers::ResolveError;
use super::*;
use crate::cli::{Command, DEFAULT_ROUTER_IMAGE, DEFAULT_SHADOW_IMAGE};

/// A fresh, empty config directory.
fn dir() -> Paths {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "ktx-config-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    Paths { dir: p.join("ktx") }
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn resolve(paths: &Paths, args: &[&str]) -> Resolved {
    let argv = std::iter::once("ktx").chain(args.iter().copied());
    match resolve_in(argv, Some(paths.clone())) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn error(paths: &Paths, args: &[&str]) -> String {
    let argv = std::iter::once("ktx").chain(args.iter().copied());
    match resolve_in(argv, Some(paths.clone())) {
        Ok(_) => panic!("resolved"),
        Err(e) => e.to_string(),
    }
}

fn source(r: &Resolved, id: &str) -> Source {
    r.layers.source(id).cloned().unwrap()
}

const MESH: &[&str] = &["mesh", "orders", "--expose", "80"];

fn mesh(extra: &[&str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = MESH.to_vec();
    for e in extra {
        v.push(Box::leak(e.to_string().into_boxed_str()));
    }
    v
}

#[test]
fn every_global_flag_is_a_key_and_profile_is_not() {
    let keys = Keys::of_cli();
    for (name, kind) in [
        ("namespace", Kind::Value),
        ("routerImage", Kind::Value),
        ("shadowImage", Kind::Value),
        ("timeout", Kind::Value),
        ("api-timeout", Kind::Value),
        ("skipPortChecking", Kind::Switch),
        ("verbose", Kind::Count),
    ] {
        assert_eq!(keys.find(name).map(|k| k.kind), Some(kind), "{name}");
    }
    assert!(keys.find("profile").is_none());
    assert!(keys.find("help").is_none());
    // A command's own flag is not a global default.
    assert!(keys.find("expose").is_none());
    assert!(keys.find("router-replicas").is_none());
}

#[test]
fn keys_accept_kt_connect_and_ktx_spellings() {
    let keys = Keys::of_cli();
    for name in [
        "routerImage",
        "router-image",
        "router_image",
        "ROUTERIMAGE",
        "mesh.routerImage",
        "mesh.router-image",
        "global.routerImage",
    ] {
        assert_eq!(
            keys.find(name).map(|k| k.long.as_str()),
            Some("routerImage"),
            "{name}"
        );
    }
    assert_eq!(
        keys.find("apiTimeout").map(|k| k.long.as_str()),
        Some("api-timeout")
    );
    assert_eq!(
        keys.find("skip-port-checking").map(|k| k.id.as_str()),
        Some("skip_port_checking")
    );
    assert!(keys.find("").is_none());
    assert!(keys.find("routerImages").is_none());
}

#[test]
fn without_layers_the_built_in_defaults_hold() {
    let paths = dir();
    let r = resolve(&paths, MESH);
    assert_eq!(r.cli.global.router_image, DEFAULT_ROUTER_IMAGE);
    assert_eq!(source(&r, "router_image"), Source::Default);
    assert_eq!(source(&r, "namespace"), Source::Unset);
    assert!(matches!(r.cli.command, Command::Mesh(_)));
}

#[test]
fn the_file_beats_the_built_in_default() {
    let paths = dir();
    write(
        paths.file(),
        "routerImage: reg/ktx-router:1\nnamespace: shop\ntimeout: 90s\nskipPortChecking: true\nverbose: 2\n",
    );
    let r = resolve(&paths, MESH);
    let g = &r.cli.global;
    assert_eq!(g.router_image, "reg/ktx-router:1");
    assert_eq!(g.namespace.as_deref(), Some("shop"));
    assert_eq!(g.timeout, std::time::Duration::from_secs(90));
    assert!(g.skip_port_checking);
    assert_eq!(g.verbose, 2);
    let file = Source::File(paths.file().display().to_string());
    for id in [
        "router_image",
        "namespace",
        "timeout",
        "skip_port_checking",
        "verbose",
    ] {
        assert_eq!(source(&r, id), file, "{id}");
    }
    assert_eq!(source(&r, "shadow_image"), Source::Default);
    // The command's own arguments are untouched.
    let Command::Mesh(m) = &r.cli.command else {
        panic!("not mesh")
    };
    assert_eq!(
        m.service,
        crate::plan::target::Target::Service("orders".into())
    );
}

#[test]
fn the_profile_beats_the_file() {
    let paths = dir();
    write(
        paths.file(),
        "routerImage: file/r:1\nshadowImage: file/s:1\n",
    );
    write(paths.profile("team").unwrap(), "routerImage: team/r:1\n");
    let r = resolve(&paths, &mesh(&["--profile", "team"]));
    assert_eq!(r.cli.global.router_image, "team/r:1");
    assert_eq!(source(&r, "router_image"), Source::Profile("team".into()));
    // What the profile does not set still comes from the file.
    assert_eq!(r.cli.global.shadow_image, "file/s:1");
    // Without --profile, the file alone.
    assert_eq!(resolve(&paths, MESH).cli.global.router_image, "file/r:1");
}

#[test]
fn a_flag_beats_the_profile_before_or_after_the_command() {
    let paths = dir();
    write(paths.file(), "routerImage: file/r:1\nnamespace: file-ns\n");
    write(paths.profile("team").unwrap(), "routerImage: team/r:1\n");
    let after = resolve(
        &paths,
        &mesh(&["--profile", "team", "--routerImage", "flag/r:1"]),
    );
    assert_eq!(after.cli.global.router_image, "flag/r:1");
    assert_eq!(source(&after, "router_image"), Source::Flag);
    let mut before = vec![
        "--router-image",
        "flag/r:2",
        "-n",
        "flag-ns",
        "--profile",
        "team",
    ];
    before.extend_from_slice(MESH);
    let before = resolve(&paths, &before);
    assert_eq!(before.cli.global.router_image, "flag/r:2");
    assert_eq!(before.cli.global.namespace.as_deref(), Some("flag-ns"));
    assert_eq!(source(&before, "namespace"), Source::Flag);
}

#[test]
fn the_file_beats_the_namespace_which_beats_the_default() {
    let paths = dir();
    write(paths.file(), "routerImage: file/r:1\n");
    let mut r = resolve(&paths, MESH);
    let data: BTreeMap<String, String> = [
        ("routerImage", "team/r:1"),
        ("shadowImage", "team/s:1"),
        ("timeout", "45s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (values, warnings) = namespace::parse(&data, "shop/ktx-defaults", r.layers.keys());
    assert!(warnings.is_empty(), "{warnings:?}");
    let cli = r
        .layers
        .with_namespace("shop/ktx-defaults", &values)
        .unwrap();
    assert_eq!(cli.global.router_image, "file/r:1");
    assert_eq!(cli.global.shadow_image, "team/s:1");
    assert_eq!(cli.global.timeout, std::time::Duration::from_secs(45));
    let rows = r.layers.rows();
    let row = |k: &str| rows.iter().find(|r| r.0 == k).cloned().unwrap();
    assert_eq!(
        row("shadowImage"),
        (
            "shadowImage".into(),
            "team/s:1".into(),
            Source::Namespace("shop/ktx-defaults".into())
        )
    );
    assert_eq!(
        row("routerImage").2,
        Source::File(paths.file().display().to_string())
    );
    let Command::Mesh(m) = &cli.command else {
        panic!("not mesh")
    };
    assert_eq!(
        m.service,
        crate::plan::target::Target::Service("orders".into())
    );
}

#[test]
fn the_namespace_configmap_skips_what_it_cannot_set_and_says_so() {
    let keys = Keys::of_cli();
    let data: BTreeMap<String, String> = [
        ("routerImage", "team/r:1"),
        ("namespace", "elsewhere"),
        ("kubeconfig", "/etc/passwd"),
        ("api-timeout", "1s"),
        ("timeout", "soon"),
        ("colour", "blue"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (values, warnings) = namespace::parse(&data, "shop/ktx-defaults", &keys);
    assert_eq!(values.0.keys().collect::<Vec<_>>(), ["router_image"]);
    assert_eq!(warnings.len(), 5, "{warnings:#?}");
    for w in &warnings {
        assert!(w.starts_with("ConfigMap shop/ktx-defaults: key "), "{w}");
    }
    assert!(warnings
        .iter()
        .any(|w| w.contains("\"colour\"") && w.contains("routerImage")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("\"timeout\"") && w.contains("soon")));
}

#[test]
fn a_flag_given_does_not_take_the_namespace_value() {
    let paths = dir();
    let mut r = resolve(&paths, &mesh(&["--shadowImage", "flag/s:1"]));
    let (values, _) = namespace::parse(
        &[("shadowImage".to_string(), "team/s:1".to_string())].into(),
        "shop/ktx-defaults",
        r.layers.keys(),
    );
    let cli = r
        .layers
        .with_namespace("shop/ktx-defaults", &values)
        .unwrap();
    assert_eq!(cli.global.shadow_image, "flag/s:1");
    assert_eq!(DEFAULT_SHADOW_IMAGE, "ktx.local/ktx-shadow:dev");
}

#[test]
fn kt_connect_group_maps_and_lists_are_read() {
    let keys = Keys::of_cli();
    let v = file::parse(
        "global:\n  namespace: shop\nmesh:\n  router-image: r:1\n",
        "f",
        &keys,
    )
    .unwrap();
    assert_eq!(v.get("namespace").unwrap().value, "shop");
    assert_eq!(v.get("router_image").unwrap().value, "r:1");
    assert_eq!(v.get("router_image").unwrap().line, 4);
}

#[test]
fn a_bad_file_is_an_error_naming_file_and_line() {
    let keys = Keys::of_cli();
    let cases = [
        (
            "routerImage: a\nshadowImage: [b\n",
            "f line 3",
            "not valid YAML",
        ),
        (
            "routerImage: a\n\ncolour: blue\n",
            "f line 3",
            "unknown key \"colour\"",
        ),
        (
            "routerImage: a\ntimeout: soon\n",
            "f line 2",
            "\"soon\" is not a duration",
        ),
        ("skipPortChecking: maybe\n", "f line 1", "not true or false"),
        ("verbose: -1\n", "f line 1", "not a count"),
        (
            "routerImage: {a: b}\n",
            "f line 1",
            "unknown key \"routerImage.a\"",
        ),
        ("- routerImage\n", "f line 1", "expected a map"),
        (
            "routerImage: [a, {b: c}]\n",
            "f line 1",
            "expected a single value",
        ),
    ];
    for (text, at, what) in cases {
        let e = file::parse(text, "f", &keys).unwrap_err().to_string();
        assert!(e.starts_with(at) && e.contains(what), "{text:?}: {e}");
    }
    let unknown = file::parse("colour: blue\n", "f", &keys)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("routerImage, shadowImage"), "{unknown}");
}

#[test]
fn odd_bytes_never_panic_the_parser() {
    let keys = Keys::of_cli();
    let samples = [
        "",
        "\n",
        "~",
        "null",
        "[]",
        "{}",
        "\u{0}",
        "a",
        ":",
        "- - -",
        "&a [*a]",
        "!!binary x",
        "routerImage: &x y\nshadowImage: *x\n",
        "? [a]\n: b\n",
        "'a': 'b'\n",
        "\u{feff}routerImage: a",
        "routerImage: 1e999\n",
        "routerImage: .inf\n",
        "{{{{{{{{{{",
        "routerImage: \"\\x\"\n",
    ];
    for s in samples {
        let _ = file::parse(s, "f", &keys);
    }
    // Every byte string of a small alphabet up to length 4.
    let alphabet = [b':', b' ', b'\n', b'-', b'a', b'[', b'{', b'"', b'#', b'*'];
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(s) = stack.pop() {
        let _ = file::parse(&String::from_utf8_lossy(&s), "f", &keys);
        if s.len() < 4 {
            for b in alphabet {
                let mut t = s.clone();
                t.push(b);
                stack.push(t);
            }
        }
    }
}

#[test]
fn a_broken_file_fails_every_command_but_config() {
    let paths = dir();
    write(paths.file(), "routerImage: a\ntimeout: soon\n");
    let e = error(&paths, MESH);
    assert!(
        e.starts_with(&format!("{} line 2: timeout", paths.file().display())),
        "{e}"
    );
    let r = resolve(&paths, &["config", "unset", "--all"]);
    assert!(r.layers.problem.as_deref().unwrap().contains("line 2"));
}

#[test]
fn an_unknown_profile_names_the_saved_ones() {
    let paths = dir();
    write(paths.profile("staging").unwrap(), "namespace: s\n");
    write(paths.profile("prod").unwrap(), "namespace: p\n");
    let e = error(&paths, &mesh(&["--profile", "qa"]));
    assert!(
        e.contains("no profile \"qa\" (saved profiles: prod, staging)"),
        "{e}"
    );
    for bad in ["../x", ".hidden", "a/b", ""] {
        assert!(matches!(
            paths.profile(bad),
            Err(ConfigError::BadProfileName { .. })
        ));
    }
}

#[test]
fn writes_are_atomic_and_private() {
    let paths = dir();
    let keys = Keys::of_cli();
    let mut v = Values::default();
    v.0.insert(
        "router_image".into(),
        file::Entry {
            value: "reg/r:1".into(),
            line: 0,
        },
    );
    v.0.insert(
        "timeout".into(),
        file::Entry {
            value: "90s".into(),
            line: 0,
        },
    );
    file::write(&paths.file(), "old: text\n").unwrap();
    file::write(&paths.file(), &file::render(&v, &keys)).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.file()), 0o600);
    assert_eq!(mode(&paths.dir), 0o700);
    let names: Vec<_> = std::fs::read_dir(&paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["config.yaml"], "no temporary file left");
    // What is written reads back the same.
    let back = file::load(&paths.file(), &keys).unwrap();
    assert_eq!(back.get("router_image").unwrap().value, "reg/r:1");
    assert_eq!(back.get("timeout").unwrap().value, "90s");
}

#[test]
fn clap_errors_stay_clap_errors() {
    let paths = dir();
    let e = resolve_in(["ktx", "--help"], Some(paths.clone())).unwrap_err();
    assert!(matches!(e, ResolveError::Clap(_)));
    let e = resolve_in(["ktx", "mesh"], Some(paths)).unwrap_err();
    assert!(matches!(e, ResolveError::Clap(_)));
}
