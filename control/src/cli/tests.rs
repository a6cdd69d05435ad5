//! Parsing of whole command lines, kt-connect's spellings included.

use clap::CommandFactory;

use super::*;
use crate::plan::expose::Remote;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ktx").chain(args.iter().copied()))
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn kt_connect_mesh_line_still_works() {
    let cli = parse(&[
        "mesh",
        "orders",
        "--expose",
        "3001:80,9000",
        "--versionMark",
        "foobar",
        "-n",
        "shop",
        "--routerImage",
        "r:1",
        "--shadowImage",
        "s:1",
    ])
    .unwrap();
    assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
    assert_eq!(cli.global.router_image, "r:1");
    assert_eq!(cli.global.shadow_image, "s:1");
    let Command::Mesh(m) = cli.command else {
        panic!("not mesh")
    };
    assert_eq!(m.service, Target::Service("orders".into()));
    assert_eq!(m.expose.expose.len(), 2);
    assert_eq!(m.expose.expose[0].local, Some(3001));
    assert_eq!(m.expose.expose[1].remote, Remote::Number(9000));
    assert_eq!(m.rule.version_mark.as_deref(), Some("foobar"));
    assert_eq!(m.rule.on_unavailable, OnUnavailable::Fallback);
}

#[test]
fn richer_rules_and_kebab_aliases() {
    let cli = parse(&[
        "mesh",
        "orders",
        "--expose",
        "80",
        "--expose",
        "3001:9090",
        "--version-mark",
        "x-dev:alice",
        "--header",
        "x-team=a",
        "--header-regex",
        "x-user=al.*",
        "--header-present",
        "x-debug",
        "--baggage",
        "user=alice",
        "--path-prefix",
        "/api",
        "--method",
        "GET",
        "--on-unavailable",
        "reject",
        "--router-image",
        "r:2",
        "-o",
        "json",
        "-vv",
        "--timeout",
        "30s",
    ])
    .unwrap();
    assert_eq!(cli.global.output, Output::Json);
    assert_eq!(cli.global.verbose, 2);
    assert_eq!(cli.global.timeout, Duration::from_secs(30));
    assert_eq!(cli.global.router_image, "r:2");
    assert_eq!(cli.global.shadow_image, DEFAULT_SHADOW_IMAGE);
    let Command::Mesh(m) = cli.command else {
        panic!("not mesh")
    };
    assert_eq!(m.expose.expose.len(), 2, "repeated --expose accumulates");
    assert_eq!(m.rule.header_present, vec!["x-debug".to_string()]);
    assert_eq!(m.rule.on_unavailable, OnUnavailable::Reject);
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let e = parse(&["mesh", "orders", "--expose", "3001:8080:1"]).unwrap_err();
    assert!(e.to_string().contains("more than one ':'"), "{e}");
    let e = parse(&["mesh", "orders"]).unwrap_err();
    assert!(e.to_string().contains("--expose"), "{e}");
    let e = parse(&[
        "mesh",
        "orders",
        "--expose",
        "80",
        "--on-unavailable",
        "maybe",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("fallback"), "{e}");
    let e = parse(&["status", "--timeout", "5"]).unwrap_err();
    assert!(e.to_string().contains("like 500ms"), "{e}");
}

#[test]
fn other_commands() {
    assert!(matches!(
        parse(&["status", "-o", "json"]).unwrap().command,
        Command::Status
    ));
    let Command::Clean(c) = parse(&["clean", "--dry-run"]).unwrap().command else {
        panic!()
    };
    assert!(c.dry_run);
    let Command::Recover(r) = parse(&["recover", "orders"]).unwrap().command else {
        panic!()
    };
    assert_eq!(r.service, "orders");
    let Command::Exchange(x) = parse(&["exchange", "orders", "--expose", "80", "--mode", "scale"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(x.mode, ExchangeMode::Scale);
    let Command::Preview(p) = parse(&["preview", "orders-dev", "--expose", "3001:80"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(p.name, "orders-dev");
    assert!(parse(&["completions", "bash"]).is_ok());
    assert!(parse(&["completions", "tcsh"]).is_err());
}

#[test]
fn expose_help_explains_port_and_target_port() {
    let mut cmd = Cli::command();
    let mesh = cmd.find_subcommand_mut("mesh").unwrap();
    let help = mesh.render_long_help().to_string();
    assert!(help.contains("REMOTE is the Service's `port`"), "{help}");
    assert!(help.contains("it is NOT the targetPort"), "{help}");
    assert!(help.contains("--expose 3001:80"), "{help}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("2h").is_err());
}

/// `--timeout 18446744073709551615s` was taken, and the first wait armed with it (the Service
/// lock's deadline) panicked on the clock's overflow. Now it is refused, with the longest.
#[test]
fn a_duration_past_the_clock_is_refused_with_the_longest() {
    for flag in ["--timeout", "--api-timeout", "--api-connect-timeout"] {
        let e = parse(&[
            "mesh",
            "orders",
            "--expose",
            "8080",
            flag,
            "18446744073709551615s",
        ])
        .expect_err(flag)
        .to_string();
        assert!(e.contains("longer than 365 days (525600m)"), "{flag}: {e}");
    }
    // kt-connect's spellings, in seconds, have the same bound.
    for flag in ["--podCreationTimeout", "--portForwardTimeout"] {
        assert!(parse(&[flag, "31536000", "status"]).is_ok(), "{flag}");
        let e = parse(&[flag, "18446744073709551615", "status"])
            .expect_err(flag)
            .to_string();
        assert!(e.contains("1..=31536000"), "{flag}: {e}");
    }
}

/// `ktx connect` checked these only inside its flow task, after the TUN device, routes and
/// DNS were up, and then only warned; a huge --flow-buffer would abort on the first SYN.
#[test]
fn connect_flow_limits_are_checked_before_anything_starts() {
    for (flag, bad, good, range) in [
        ("--max-flows", "0", "1", "1..=1000000"),
        ("--max-dialing", "0", "65536", "1..=65536"),
        ("--flow-buffer", "1000", "1024", "1024..=67108864"),
        (
            "--flow-buffer",
            "18446744073709551615",
            "67108864",
            "1024..=67108864",
        ),
        // 0s reset every flow at the next sweep, within a second of its start.
        ("--flow-idle-timeout", "0s", "1s", "shorter than 1000ms"),
    ] {
        let e = parse(&["connect", flag, bad]).expect_err(flag).to_string();
        assert!(e.contains(flag) && e.contains(range), "{flag} {bad}: {e}");
        assert!(parse(&["connect", flag, good]).is_ok(), "{flag} {good}");
    }
}

#[test]
fn janitor_flags() {
    let cli = parse(&["janitor", "--identity", "j-1", "--interval", "500ms"]).unwrap();
    let Command::Janitor(a) = cli.command else {
        panic!("not janitor")
    };
    assert_eq!(a.identity.as_deref(), Some("j-1"));
    assert_eq!(a.interval, Duration::from_millis(500));
    assert_eq!(a.metrics_addr.port(), 9090);
    for bad in ["0s", "10s"] {
        let e = parse(&["janitor", "--interval", bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("100ms to 5s"), "{e}");
    }
}

#[test]
fn kt_connects_integration_lines_parse_unchanged() {
    // testing/integration/go.sh of kt-connect v0.3.7, `ktctl` → `ktx`.
    let mesh = parse(&[
        "-d",
        "-n",
        "kt-it",
        "-i",
        "s:2",
        "-f",
        "mesh",
        "tomcat",
        "--mode",
        "auto",
        "--expose",
        "8080",
        "--versionMark",
        "ci",
        "--routerImage",
        "r:2",
    ])
    .unwrap()
    .resolved();
    assert!(mesh.global.verbose >= 1 && mesh.global.force_update);
    assert_eq!(mesh.global.shadow_image, "s:2");
    assert_eq!(mesh.global.router_image, "r:2");
    let Command::Mesh(m) = mesh.command else {
        panic!("not mesh")
    };
    assert_eq!(m.mode, MeshMode::Auto);
    assert_eq!(m.rule.version_mark.as_deref(), Some("ci"));

    let exchange = parse(&[
        "-d",
        "-n",
        "kt-it",
        "-i",
        "s:2",
        "-f",
        "exchange",
        "deployment/tomcat",
        "--mode",
        "scale",
        "--expose",
        "8080",
    ])
    .unwrap();
    let Command::Exchange(x) = exchange.command else {
        panic!("not exchange")
    };
    assert_eq!(x.service, Target::Deployment("tomcat".into()));
    assert_eq!(x.mode, ExchangeMode::Scale);

    let preview = parse(&[
        "-n",
        "kt-it",
        "preview",
        "tomcat-preview",
        "--expose",
        "8080",
        "--external",
    ])
    .unwrap();
    let Command::Preview(p) = preview.command else {
        panic!("not preview")
    };
    assert_eq!(p.external, Some(External::LoadBalancer));
    let Command::Preview(p) = parse(&["preview", "t", "--expose", "8080", "--external=nodeport"])
        .unwrap()
        .command
    else {
        panic!("not preview")
    };
    assert_eq!(p.external, Some(External::NodePort));
}

#[test]
fn kt_connect_seconds_flags_become_ktx_durations() {
    let cli = parse(&[
        "--podCreationTimeout",
        "60",
        "--portForwardTimeout",
        "7",
        "-c",
        "/tmp/kc",
        "status",
    ])
    .unwrap()
    .resolved();
    assert_eq!(cli.global.timeout, Duration::from_secs(60));
    assert_eq!(cli.global.api_connect_timeout, Duration::from_secs(7));
    assert_eq!(
        cli.global.kubeconfig.as_deref(),
        Some(std::path::Path::new("/tmp/kc"))
    );
    let both = parse(&["--podCreationTimeout", "60", "--timeout", "30s", "status"]);
    assert!(both.is_err(), "two spellings of one setting are refused");
}

#[test]
fn help_says_where_kt_connects_version_flag_went() {
    let help = Cli::command().render_long_help().to_string();
    assert!(
        help.contains("kt-connect's -v (the version) is -V here"),
        "{help}"
    );
}

#[test]
fn a_command_after_double_dash_keeps_its_own_flags() {
    let cli = parse(&[
        "-n",
        "shop",
        "mesh",
        "orders",
        "--expose",
        "3001:80",
        "--env-file",
        ".env",
        "--container",
        "app",
        "--versionMark",
        "ci",
        "--",
        "sh",
        "-c",
        "exit 3",
        "--expose",
        "-n",
    ])
    .unwrap();
    let Command::Mesh(m) = cli.command else {
        panic!("not mesh")
    };
    assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
    assert_eq!(m.rule.version_mark.as_deref(), Some("ci"));
    assert_eq!(m.workload.env_file, Some(PathBuf::from(".env")));
    assert_eq!(m.workload.container.as_deref(), Some("app"));
    assert_eq!(m.workload.command, ["sh", "-c", "exit 3", "--expose", "-n"]);
    assert_eq!(m.workload.command_grace, Duration::from_secs(10));
    assert!(!m.workload.env_secrets);

    let cli = parse(&[
        "exchange",
        "orders",
        "--expose",
        "80",
        "--env-secrets",
        "--",
        "env",
    ])
    .unwrap();
    let Command::Exchange(x) = cli.command else {
        panic!("not exchange")
    };
    assert!(x.workload.env_secrets && x.workload.env_file.is_none());
    assert_eq!(x.workload.command, ["env"]);
    // Without `--`, a stray word is still an error, not a command.
    assert!(parse(&["mesh", "orders", "--expose", "80", "sh"]).is_err());
}
