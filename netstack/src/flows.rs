//! The userspace TCP/IP stack on the TUN device: every TCP connection the machine opens to a
//! routed address becomes one [`Dial`] and one [`splice`].
//!
//! The stack is `ipstack`: a tokio-native TCP implementation that hands out each accepted
//! connection as an `AsyncRead + AsyncWrite` stream. UDP (other than DNS, which the local
//! resolver answers on loopback) and ICMP are out of scope and dropped.

use std::sync::Arc;
use std::time::Duration;

use ipstack::{IpStack, IpStackConfig, IpStackStream, TcpConfig, TcpOptions};
use tokio::sync::Semaphore;

pub mod syn_gate;

use crate::dial::Dial;
use crate::splice::splice;
use crate::tun_device::TunDevice;
use syn_gate::{Parked, SynGate};

/// Limits of the flows (ktx exposes each as a flag).
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// TCP connections carried at once; past it, new ones are reset.
    pub max_flows: usize,
    /// A flow with no byte moving either way for this long is reset.
    pub idle: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 4096,
            idle: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("invalid stack configuration: {0}")]
    Config(String),
    #[error("the TCP/IP stack stopped")]
    Stopped,
}

/// Serves the device until the stack stops (or the future is dropped).
pub async fn serve<D: Dial>(
    tun: TunDevice,
    dial: Arc<D>,
    config: FlowConfig,
) -> Result<(), FlowError> {
    let mut stack_config = IpStackConfig::default();
    stack_config
        .mtu(tun.mtu)
        .map_err(|e| FlowError::Config(e.to_string()))?;
    let mut tcp = TcpConfig::default();
    tcp.timeout = config.idle;
    // Without an MSS option the machine's TCP falls back to 536-byte segments.
    tcp.options = Some(vec![TcpOptions::MaximumSegmentSize(
        tun.mtu.saturating_sub(40),
    )]);
    stack_config.with_tcp_config(tcp);
    let slots = Arc::new(Semaphore::new(config.max_flows));
    let parked = Arc::new(Parked::default());
    let gate = SynGate::new(tun.device, dial, parked.clone(), slots);
    let mut stack = IpStack::new(stack_config, gate);
    loop {
        let stream = stack.accept().await.map_err(|_| FlowError::Stopped)?;
        let IpStackStream::Tcp(mut local) = stream else {
            continue;
        };
        // ipstack names the sides from the device's view: "local" is the machine's client,
        // "peer" the destination it connects to.
        let key = (local.local_addr(), local.peer_addr());
        let Some((mut remote, slot)) = parked.take(&key, PARKED_STALE) else {
            tracing::debug!(client = %key.0, dst = %key.1, "flow: no dialed stream, dropping");
            continue;
        };
        let idle = config.idle;
        tokio::spawn(async move {
            let _slot = slot;
            let (client, dst) = key;
            match splice(&mut local, &mut remote, idle).await {
                Ok(c) => {
                    tracing::debug!(%client, %dst, up = c.to_remote, down = c.to_local, "flow: done")
                }
                Err(e) => tracing::debug!(%client, %dst, error = %e, "flow: ended"),
            }
        });
    }
}

/// A dialed stream whose SYN the stack never turned into a connection is dropped after this.
const PARKED_STALE: Duration = Duration::from_secs(30);
