//! Accept errors back off instead of spinning: with the process out of file descriptors
//! (EMFILE) and a client waiting in the admin port's backlog, every accept fails at once. A
//! loop that retries immediately burns a whole core; the router must stay near idle.
//!
//! Its own test binary: it lowers the whole process's RLIMIT_NOFILE (with `prlimit`, so no
//! unsafe code), which would break any test running beside it.

#[path = "proxy/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use ktx_testbackend::fds::cpu_ticks_while_accept_fails;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_on_the_admin_port_do_not_spin() {
    let mesh = Mesh::start_with(|c| c.reload_interval = Duration::from_secs(3600)).await;
    let admin = mesh.router.admin_addr;

    let used = cpu_ticks_while_accept_fails(admin).await;
    eprintln!("cpu ticks in 1 s with accept failing: {used}");
    // A spinning accept loop uses ~100 ticks a second; backing off, a few.
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s while accept failed with EMFILE: the accept loop spins"
    );
    // And the admin port serves again once descriptors are back.
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
}
