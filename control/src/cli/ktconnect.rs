//! kt-connect compatibility: every flag of kt-connect v0.3.7's global, mesh, exchange and
//! preview options (`pkg/kt/command/options/{global,mesh,exchange,preview}.go`), what it means in
//! ktx, or why ktx refuses it. README.md's "kt-connect compatibility" table lists the same
//! flags; the tests below parse each one and check the README names it.

/// Why `--useShadowDeployment` is refused.
pub const USE_SHADOW_DEPLOYMENT: &str = "ktx does not run shadows as Deployments: a shadow is a \
bare Pod that holds its session's tunnel credentials and goes with the session; a Deployment \
would restart it after the session ended and outlive a crashed ktx. Drop the flag";

/// Why `--asWorker` is refused.
pub const AS_WORKER: &str = "--asWorker is kt-connect's internal flag for its background \
process; ktx runs in one process. Drop the flag";

/// Why `exchange --mode ephemeral` is refused.
pub const EPHEMERAL: &str = "ktx has no ephemeral mode (kt-connect's experimental mode \
injects a privileged ephemeral container into the workload's pods, which Pod Security \
\"restricted\" forbids): use --mode selector or --mode scale";

use Fate::{Accepted, Refused};

/// What becomes of one kt-connect flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Accepted; the text is its meaning in ktx.
    Accepted(&'static str),
    /// Refused with this reason.
    Refused(&'static str),
}

/// One kt-connect flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `global`, `mesh`, `exchange` or `preview`.
    pub scope: &'static str,
    /// The long name, as kt-connect spells it.
    pub long: &'static str,
    pub short: Option<char>,
    /// A value the flag takes in the tests (`None`: a switch).
    pub example: Option<&'static str>,
    pub fate: Fate,
}

const fn flag(
    scope: &'static str,
    long: &'static str,
    short: Option<char>,
    example: Option<&'static str>,
    fate: Fate,
) -> Flag {
    Flag {
        scope,
        long,
        short,
        example,
        fate,
    }
}

/// Every flag of kt-connect v0.3.7's global, mesh, exchange and preview options.
#[rustfmt::skip]
pub const FLAGS: &[Flag] = &[
    flag("global", "namespace", Some('n'), Some("shop"), Accepted("namespace to work in")),
    flag("global", "kubeconfig", Some('c'), Some("/tmp/kc"), Accepted("kubeconfig file")),
    flag("global", "context", None, Some("dev"), Accepted("kubeconfig context")),
    flag("global", "image", Some('i'), Some("reg/shadow:1"), Accepted("the shadow image (= --shadowImage)")),
    flag("global", "imagePullSecret", None, Some("regcred"), Accepted("imagePullSecrets of the router and shadow pods and of the router's ServiceAccount")),
    flag("global", "serviceAccount", None, Some("dev-sa"), Accepted("ServiceAccount of the shadow pods (token not mounted)")),
    flag("global", "nodeSelector", None, Some("disk=ssd,region=hangzhou"), Accepted("nodeSelector of the router and shadow pods")),
    flag("global", "debug", Some('d'), None, Accepted("debug logs (= -v)")),
    flag("global", "withLabel", Some('l'), Some("team=orders"), Accepted("extra labels on the router and shadow pods (ktx's own keys refused)")),
    flag("global", "withAnnotation", None, Some("a.example.com/x=1"), Accepted("extra annotations on the router and shadow pods")),
    flag("global", "portForwardTimeout", None, Some("10"), Accepted("seconds; = --api-connect-timeout")),
    flag("global", "podCreationTimeout", None, Some("60"), Accepted("seconds; = --timeout (pods Ready and other cluster steps)")),
    flag("global", "useShadowDeployment", None, None, Refused(USE_SHADOW_DEPLOYMENT)),
    flag("global", "useLocalTime", None, None, Accepted("no effect: Leases are judged by observed change, clocks need not agree")),
    flag("global", "forceUpdate", Some('f'), None, Accepted("imagePullPolicy Always on the router and shadow pods")),
    flag("global", "asWorker", None, None, Refused(AS_WORKER)),
    flag("global", "podQuota", None, Some("0.5c,512m"), Accepted("CPU and memory request and limit of the router and shadow containers")),
    flag("mesh", "expose", None, Some("8080"), Accepted("Service ports to local ports, [LOCAL:]REMOTE")),
    flag("mesh", "mode", None, Some("manual"), Accepted("auto: ktx's router; manual: a labelled shadow for Istio, its DestinationRule and VirtualService printed (or created with --apply-istio)")),
    flag("mesh", "versionMark", None, Some("ver:"), Accepted("header KEY: VALUE (KEY default VERSION, VALUE random when empty)")),
    flag("mesh", "skipPortChecking", None, None, Accepted("no warning when nothing listens on a local port")),
    flag("mesh", "routerImage", None, Some("reg/router:1"), Accepted("the router image")),
    flag("exchange", "expose", None, Some("8080"), Accepted("Service ports to local ports, [LOCAL:]REMOTE")),
    flag("exchange", "mode", None, Some("scale"), Accepted("selector or scale")),
    flag("exchange", "mode", None, Some("ephemeral"), Refused(EPHEMERAL)),
    flag("exchange", "skipPortChecking", None, None, Accepted("no warning when nothing listens on a local port")),
    flag("exchange", "recoverWaitTime", None, Some("120"), Accepted("no effect: scaling back always waits for Ready pods, within --timeout")),
    flag("preview", "expose", None, Some("8080"), Accepted("ports of the new Service to local ports, [LOCAL:]PORT")),
    flag("preview", "external", None, None, Accepted("Service type LoadBalancer (--external=nodeport: NodePort); the address printed")),
    flag("preview", "skipPortChecking", None, None, Accepted("no warning when nothing listens on a local port")),
];

#[cfg(test)]
mod tests;
