//! Harness for ktx's end-to-end tests against a real Kubernetes cluster.
//!
//! The tier runs only when asked: `KTX_E2E=1` (or `KTX_E2E_REQUIRED=1`). An exported
//! `KUBECONFIG` alone never starts it, since it may name a team's cluster. The cluster is the one
//! `KUBECONFIG` names: `e2e/cluster up` prints it, and kind or any other cluster works too (see
//! `e2e/README.md`). When not asked, or when that cluster does not answer, every test prints why
//! (`SKIPPED …` on stderr, past the output capture) and passes as skipped, unless
//! `KTX_E2E_REQUIRED=1` (CI): then an unusable cluster fails. `KUBECONFIG` must be set
//! explicitly, so that the tests never run against whatever context happens to be the default on a
//! developer's machine.
//!
//! Each test works in a namespace of its own ([`Namespace`]), deleted when the test ends, also when
//! it fails (then the namespace's objects, events and pod logs are printed first).
//!
//! Environment:
//! - `KTX_E2E=1`: run the tier (`./test.sh` passes it on; `e2e/ci.sh` sets `KTX_E2E_REQUIRED=1`).
//! - `KUBECONFIG`: the cluster (required to run anything).
//! - `KTX_E2E_REQUIRED=1`: an unreachable cluster is a failure, not a skip.
//! - `KTX_E2E_KUBECTL`: the kubectl to use (default `kubectl`; `e2e/cluster` ships a 1.20 one in
//!   `/var/lib/ktx-e2e/bin/kubectl`).
//! - `KTX_E2E_IMAGE_PREFIX` (default `ktx.local/`), `KTX_E2E_IMAGE_TAG` (default `dev`): where the
//!   images of `e2e/images.sh` are; `KTX_E2E_TESTBACKEND_IMAGE` overrides the test backend's.
//! - `KTX_E2E_KEEP_NAMESPACES=1`: do not delete the namespaces (for debugging).
//!
//! The harness has no dependencies: it drives the cluster with kubectl and speaks plain HTTP/1.1.

mod cluster;
mod http;
mod manifest;
mod namespace;
mod process;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

pub use cluster::Cluster;
pub use http::{http_get, HttpResponse};
pub use manifest::{
    image, testbackend_image, testbackend_manifest, two_port_manifest, yaml_string,
};
pub use namespace::{Namespace, PodRun, PortForward};
pub use process::{run, Output};

/// Set to `1` to make an unreachable cluster a failure (implies [`ASKED_ENV`]).
pub const REQUIRED_ENV: &str = "KTX_E2E_REQUIRED";

/// Set to `1` to run the end-to-end tier at all; without it every test is a visible skip.
pub const ASKED_ENV: &str = "KTX_E2E";

/// Writes straight to the process's stderr, past the test harness's output capture, so that a
/// skip is visible in a plain `cargo test` run.
pub fn announce(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

/// Seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Calls `f` until it gives `Some`, at most for `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(500));
    }
}
