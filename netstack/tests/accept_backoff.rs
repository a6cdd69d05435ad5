//! Accept errors back off instead of spinning: with the process out of file descriptors
//! (EMFILE) and a client waiting in the proxy's backlog, every accept fails at once. A loop
//! that retries immediately burns a whole core (the proxy's `max_flows`, 1024, is the usual
//! soft RLIMIT_NOFILE); `ktx connect` must stay near idle.
//!
//! Its own test binary: it lowers the whole process's RLIMIT_NOFILE (with `prlimit`, so no
//! unsafe code), which would break any test running beside it.

use std::sync::Arc;
use std::time::Duration;

use ktx_netstack::dial::{Dial, DialError};
use ktx_netstack::names::NameTable;
use ktx_netstack::proxy::{self, ProxyConfig};
use ktx_testbackend::fds::cpu_ticks_while_accept_fails;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Refuses every destination: the test needs only the accept loop.
struct Nowhere;

impl Dial for Nowhere {
    type Stream = TcpStream;
    async fn dial(&self, dst: std::net::SocketAddr) -> Result<TcpStream, DialError> {
        Err(DialError::Refused { dst })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_on_the_proxy_do_not_spin() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let names = NameTable::new("cluster.local", "shop");
    tokio::spawn(proxy::serve(
        listener,
        Arc::new(Nowhere),
        names,
        ProxyConfig::default(),
    ));

    let used = cpu_ticks_while_accept_fails(addr).await;
    eprintln!("cpu ticks in 1 s with accept failing: {used}");
    // A spinning accept loop uses ~100 ticks a second; backing off, a few.
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s while accept failed with EMFILE: the accept loop spins"
    );
    // And the proxy serves again once descriptors are back: a SOCKS5 greeting is answered.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut hello = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut hello))
        .await
        .expect("the proxy answers again")
        .unwrap();
    assert_eq!(hello, [5, 0]);
}
