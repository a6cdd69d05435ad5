//! `load`: the clients of the benchmark. Each prints one JSON line on stdout.
//!
//! - `throughput`: N streams download from the sink at once, either a fixed size each or for
//!   a fixed time; aggregate MiB/s and per-stream spread (min, max, Jain's fairness index).
//! - `latency`: small request/response exchanges paced at a fixed rate, on persistent
//!   connections or on a new connection each time. Open loop: when a connection is still busy
//!   at a request's scheduled time, latency counts from the scheduled time (a stall is not
//!   hidden by sending later); when it is idle, from the actual send, so the timer's
//!   millisecond granularity does not count as latency.
//! - `idle`: holds N established connections for a while (the script measures memory), then
//!   checks that every one still works.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, clap::Subcommand)]
pub enum Load {
    Throughput {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Bytes per stream (fixed-size mode).
        #[arg(long, conflicts_with = "seconds")]
        bytes: Option<u64>,
        /// Download for this long (fixed-time mode, for fairness).
        #[arg(long, value_parser = seconds)]
        seconds: Option<f64>,
        /// Upload --bytes per stream instead (the sink counts them, then answers), timed until
        /// the sink's answer.
        #[arg(long, requires = "bytes")]
        upload: bool,
    },
    Latency {
        #[arg(long)]
        target: SocketAddr,
        /// Requests per second, over all connections.
        #[arg(long)]
        rate: u32,
        #[arg(long, value_parser = seconds)]
        seconds: f64,
        /// Persistent connections sharing the rate.
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// A new connection per request (connect, send, receive, close).
        #[arg(long)]
        new_conn: bool,
        /// Unmeasured warm-up before the run.
        #[arg(long, default_value_t = 0.5, value_parser = seconds)]
        warmup: f64,
    },
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        conns: usize,
        /// Written (with the count) once every connection is established.
        #[arg(long)]
        ready_file: PathBuf,
        /// Hold the connections until this file exists (bounded by --max-hold).
        #[arg(long)]
        release_file: PathBuf,
        #[arg(long, default_value_t = 120.0, value_parser = seconds)]
        max_hold: f64,
    },
}

/// A time in seconds (`2.5`): finite, not negative, at most a day. `NaN` or `-1` made
/// `Duration::from_secs_f64` panic.
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds like 2.5"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s} is not between 0 and 86400 seconds"));
    }
    Ok(v)
}

pub async fn run(load: Load) -> anyhow::Result<()> {
    match load {
        Load::Throughput {
            target,
            streams,
            bytes,
            seconds,
            upload,
        } => throughput(target, streams, bytes, seconds, upload).await,
        Load::Latency {
            target,
            rate,
            seconds,
            conns,
            size,
            new_conn,
            warmup,
        } => latency(target, rate, seconds, conns, size, new_conn, warmup).await,
        Load::Idle {
            target,
            conns,
            ready_file,
            release_file,
            max_hold,
        } => idle(target, conns, ready_file, release_file, max_hold).await,
    }
}

async fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn throughput(
    target: SocketAddr,
    streams: usize,
    bytes: Option<u64>,
    seconds: Option<f64>,
    upload: bool,
) -> anyhow::Result<()> {
    // Fixed-time mode asks for more than can arrive and stops reading at the deadline.
    let ask = bytes.unwrap_or(u64::MAX / 2);
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        conns.push(connect(target).await?);
    }
    let start = Instant::now();
    let deadline = seconds.map(|s| start + Duration::from_secs_f64(s));
    let mut tasks = JoinSet::new();
    for mut s in conns {
        tasks.spawn(async move {
            if upload {
                return upload_one(s, ask).await.map(|()| (ask, start.elapsed()));
            }
            let mut req = vec![b'D'];
            req.extend_from_slice(&ask.to_be_bytes());
            s.write_all(&req).await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                let read = s.read(&mut buf);
                let n = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, read).await {
                        Ok(r) => r?,
                        Err(_) => break,
                    },
                    None => read.await?,
                };
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            anyhow::Ok((got, start.elapsed()))
        });
    }
    let mut per_stream = Vec::with_capacity(streams);
    let mut total = 0u64;
    while let Some(r) = tasks.join_next().await {
        let (got, took) = r??;
        if bytes.is_some_and(|b| got != b) {
            bail!("a stream got {got} bytes instead of {}", ask);
        }
        total += got;
        per_stream.push(got as f64 / MIB / took.as_secs_f64());
    }
    let elapsed = match deadline {
        Some(d) => d - start,
        None => start.elapsed(),
    };
    let agg = total as f64 / MIB / elapsed.as_secs_f64();
    let min = per_stream.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_stream.iter().copied().fold(0.0, f64::max);
    let sum: f64 = per_stream.iter().sum();
    let sq: f64 = per_stream.iter().map(|x| x * x).sum();
    let jain = if sq > 0.0 {
        sum * sum / (per_stream.len() as f64 * sq)
    } else {
        0.0
    };
    println!(
        "{{\"mib_per_s\":{agg:.1},\"streams\":{streams},\"bytes\":{total},\"seconds\":{:.3},\
         \"min_stream_mib_per_s\":{min:.2},\"max_stream_mib_per_s\":{max:.2},\"jain\":{jain:.4}}}",
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Sends `n` bytes to the sink (`U` mode) and waits for its `ok`, which it sends once it has
/// read them all.
async fn upload_one(mut s: TcpStream, n: u64) -> anyhow::Result<()> {
    let mut req = vec![b'U'];
    req.extend_from_slice(&n.to_be_bytes());
    s.write_all(&req).await?;
    let buf = vec![0x5a_u8; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    let mut answer = [0u8; 2];
    s.read_exact(&mut answer).await?;
    if &answer != b"ok" {
        bail!(
            "the sink answered {:?} instead of ok",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn latency(
    target: SocketAddr,
    rate: u32,
    seconds: f64,
    conns: usize,
    size: usize,
    new_conn: bool,
    warmup: f64,
) -> anyhow::Result<()> {
    let conns = conns.max(1);
    let period = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
    let total = Duration::from_secs_f64(warmup + seconds);
    let measure_from = Duration::from_secs_f64(warmup);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    for c in 0..conns {
        tasks.spawn(async move {
            let mut persistent = if new_conn {
                None
            } else {
                let mut s = connect(target).await?;
                s.write_all(b"E").await?;
                Some(s)
            };
            let msg = vec![b'x'; size];
            let mut back = vec![0u8; size];
            let mut samples = Vec::new();
            let mut errors = 0u64;
            // Stagger connections across the period.
            let mut due = start + period.mul_f64(c as f64 / conns as f64);
            let mut idle_since = Instant::now();
            while due < start + total {
                tokio::time::sleep_until(due).await;
                let t0 = if idle_since > due {
                    due
                } else {
                    Instant::now()
                };
                let ok = match persistent.as_mut() {
                    Some(s) => exchange(s, &msg, &mut back).await.is_ok(),
                    None => one_shot(target, &msg, &mut back).await.is_ok(),
                };
                idle_since = Instant::now();
                if due >= start + measure_from {
                    if ok {
                        samples.push((idle_since - t0).as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok && persistent.is_some() {
                    bail!("a persistent connection failed");
                }
                due += period;
            }
            anyhow::Ok((samples, errors))
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (s, e) = r??;
        all.extend(s);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i]
    };
    println!(
        "{{\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"requests\":{},\"errors\":{errors}}}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all.last().copied().unwrap_or(0),
        all.len()
    );
    Ok(())
}

async fn exchange(s: &mut TcpStream, msg: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    s.write_all(msg).await?;
    s.read_exact(back).await?;
    Ok(())
}

async fn one_shot(target: SocketAddr, msg: &[u8], back: &mut [u8]) -> anyhow::Result<()> {
    let mut s = connect(target).await?;
    let mut req = Vec::with_capacity(msg.len() + 1);
    req.push(b'E');
    req.extend_from_slice(msg);
    s.write_all(&req).await?;
    s.read_exact(back).await?;
    s.shutdown().await?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    Ok(())
}

async fn idle(
    target: SocketAddr,
    conns: usize,
    ready_file: PathBuf,
    release_file: PathBuf,
    max_hold: f64,
) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(conns);
    let mut byte = [0u8; 1];
    for _ in 0..conns {
        let mut s = connect(target).await?;
        s.write_all(b"Ei").await?;
        s.read_exact(&mut byte).await?;
        open.push(s);
    }
    std::fs::write(&ready_file, format!("{conns}\n"))?;
    let until = Instant::now() + Duration::from_secs_f64(max_hold);
    while !release_file.exists() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut errors = 0u64;
    for s in &mut open {
        let alive = async {
            s.write_all(b"j").await?;
            s.read_exact(&mut byte).await
        };
        if tokio::time::timeout(Duration::from_secs(5), alive)
            .await
            .map_or(true, |r| r.is_err())
        {
            errors += 1;
        }
    }
    println!("{{\"conns\":{conns},\"errors\":{errors}}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `--seconds=NaN` (or a negative time) made the bench panic in
    /// `Duration::from_secs_f64`; it is refused at parse now.
    #[test]
    fn times_that_are_no_duration_are_refused() {
        for bad in ["NaN", "-1", "inf", "1e9", "soon"] {
            assert!(super::seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(super::seconds("2.5"), Ok(2.5));
        assert_eq!(super::seconds("0"), Ok(0.0));
    }
}
