//! For tests of accept loops out of file descriptors (EMFILE): fill the process's descriptor
//! table but one, and measure the CPU the process burns meanwhile. The limit is lowered with
//! `prlimit` (util-linux), so no unsafe code; a test that uses this lowers the whole process's
//! RLIMIT_NOFILE and needs a test binary of its own.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

/// The descriptor table full but one, until [`Exhausted::restore`].
pub struct Exhausted {
    spare: Vec<File>,
    original: u64,
    stat: File,
}

impl Exhausted {
    /// Fills every free descriptor number below a new soft limit and leaves exactly one free
    /// (for the test's client socket: the next accept then fails with EMFILE).
    pub fn all_but_one() -> Exhausted {
        let original = soft_nofile();
        let stat = File::open("/proc/self/stat").expect("/proc/self/stat");
        // Some spare to free later, then every hole below the new limit.
        let mut spare: Vec<File> = (0..16).map(|_| dev_null()).collect();
        let fds = open_fds();
        let limit = *fds.iter().max().expect("descriptors are open") as u64 + 1;
        let holes = limit as usize - fds.len();
        spare.extend((0..holes).map(|_| dev_null()));
        set_soft_nofile(limit);
        spare.pop();
        Exhausted {
            spare,
            original,
            stat,
        }
    }

    /// CPU time (user + system) of this process so far, in clock ticks (1/100 s on Linux), read
    /// from `/proc/self/stat` opened beforehand (no descriptor is free meanwhile).
    pub fn cpu_ticks(&self) -> u64 {
        let mut buf = vec![0u8; 4096];
        let n = self
            .stat
            .read_at(&mut buf, 0)
            .expect("read /proc/self/stat");
        let stat = String::from_utf8_lossy(&buf[..n]);
        // Fields after the command name (in parentheses, may hold spaces): utime and stime are
        // fields 14 and 15 of the line, 12 and 13 after the name.
        let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    /// Frees the descriptors and puts the limit back.
    pub fn restore(mut self) {
        self.spare.clear();
        set_soft_nofile(self.original);
    }
}

/// CPU ticks this process spends in one second while a client waits in `addr`'s backlog and
/// every accept of it fails with EMFILE (the descriptor table full but one, which the client
/// takes). A loop that retries at once burns ~100; one that backs off, a few.
pub async fn cpu_ticks_while_accept_fails(addr: std::net::SocketAddr) -> u64 {
    let fds = Exhausted::all_but_one();
    let client = std::net::TcpStream::connect(addr).expect("one descriptor was free");
    let before = fds.cpu_ticks();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let used = fds.cpu_ticks() - before;
    drop(client);
    fds.restore();
    used
}

fn dev_null() -> File {
    File::open("/dev/null").expect("/dev/null")
}

fn open_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The soft RLIMIT_NOFILE now.
fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a soft limit")
}

fn set_soft_nofile(limit: u64) {
    let pid = std::process::id().to_string();
    let ok = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("prlimit (util-linux) runs")
        .success();
    assert!(ok, "prlimit --nofile={limit}: failed");
}
