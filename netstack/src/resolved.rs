//! Per-link DNS through systemd-resolved, where it runs: `resolvectl dns LINK ADDR` and
//! `resolvectl domain LINK …` on the TUN device. resolved forgets a link's settings when the
//! link disappears, so a crash undoes this with the device; [`revert`] undoes it on a clean
//! exit. Where resolved does not run, `resolv_conf` manages `/etc/resolv.conf` instead.
//!
//! Routing domains (`~DOMAIN`, `~NS` for each known namespace) send those names to the resolver;
//! the search domains make bare `svc` names expand. resolved applies search domains to
//! single-label names only, which is why `svc.NS` needs the `~NS` routing domains.
//!
//! The resolver's upstreams in this mode are the nameservers of
//! `/run/systemd/resolve/resolv.conf` (resolved's real upstreams), never the `127.0.0.53` stub:
//! the stub would send a forwarded `x.NS` name straight back through the `~NS` routing domain.
//! The resolver must be reachable from resolved on that link: listen on the TUN device's own
//! address. Not exercised by the tests on this machine (no systemd-resolved); the command lines
//! are.

use std::net::IpAddr;
use std::path::Path;

/// True when systemd-resolved is running (its runtime directory and `resolvectl` exist).
pub fn is_running() -> bool {
    Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
        && std::process::Command::new("resolvectl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The `resolvectl` argument lists that install the resolver on `link`.
pub fn commands(
    link: &str,
    resolver: IpAddr,
    search: &[String],
    routing: &[String],
) -> Vec<Vec<String>> {
    let mut domain = vec!["domain".to_owned(), link.to_owned()];
    domain.extend(search.iter().cloned());
    domain.extend(routing.iter().map(|d| format!("~{d}")));
    vec![
        vec!["dns".to_owned(), link.to_owned(), resolver.to_string()],
        domain,
        vec![
            "default-route".to_owned(),
            link.to_owned(),
            "false".to_owned(),
        ],
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("resolvectl {args}: {detail}")]
pub struct ResolvedError {
    pub args: String,
    pub detail: String,
}

/// Runs [`commands`].
pub async fn install(
    link: &str,
    resolver: IpAddr,
    search: &[String],
    routing: &[String],
) -> Result<(), ResolvedError> {
    for args in commands(link, resolver, search, routing) {
        run(&args).await?;
    }
    Ok(())
}

/// Drops the link's DNS settings (a clean exit; a crash loses them with the link).
pub async fn revert(link: &str) -> Result<(), ResolvedError> {
    run(&["revert".to_owned(), link.to_owned()]).await
}

async fn run(args: &[String]) -> Result<(), ResolvedError> {
    let out = tokio::process::Command::new("resolvectl")
        .args(args)
        .output()
        .await;
    let err = |detail: String| ResolvedError {
        args: args.join(" "),
        detail,
    };
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(err(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_route_cluster_names_to_the_resolver_only() {
        let search = [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from);
        let routing = ["cluster.local", "shop", "data"].map(String::from);
        let cmds = commands("ktx0", "198.18.0.1".parse().unwrap(), &search, &routing);
        let lines: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "dns ktx0 198.18.0.1",
                "domain ktx0 shop.svc.cluster.local svc.cluster.local cluster.local ~cluster.local ~shop ~data",
                "default-route ktx0 false",
            ]
        );
    }
}
