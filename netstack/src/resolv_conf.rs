//! A managed `/etc/resolv.conf` (where systemd-resolved is not running), undone on exit and after
//! a crash.
//!
//! [`install`] copies the current file to a backup (state files, paths injectable), then writes
//! `nameserver <resolver>`, a search list that puts the cluster first, and the original options
//! **in place** (truncate + write, never rename: the file may be a bind mount, as under
//! `ip netns exec`). [`restore`] puts the original back only if the file is still exactly what
//! ktx wrote; a file someone changed since is left alone and the backup is kept beside it. The
//! next `ktx connect` (which calls [`install`], which restores first) or `ktx clean` after a
//! crash calls [`restore`].
//!
//! A live session's file looks exactly like a crashed one's, so the session that installed it
//! holds a lock (`flock` on `<backup>.lock`, [`Held`]) for as long as it manages the file; the
//! lock goes with its process. [`restore`] leaves a file whose lock is held alone, and
//! [`install`] refuses to take over while it is held.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The first line of a file ktx manages.
pub const MARKER: &str = "# managed by ktx connect";

/// Where the managed file and the state files are.
#[derive(Debug, Clone)]
pub struct ResolvPaths {
    /// The managed file (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// The original's copy (`/var/lib/ktx/resolv.conf.backup`); `<backup>.managed` holds what
    /// ktx wrote, to prove the file is still ours before restoring.
    pub backup: PathBuf,
}

impl Default for ResolvPaths {
    fn default() -> Self {
        ResolvPaths {
            resolv_conf: "/etc/resolv.conf".into(),
            backup: "/var/lib/ktx/resolv.conf.backup".into(),
        }
    }
}

impl ResolvPaths {
    fn managed(&self) -> PathBuf {
        self.beside_backup(".managed")
    }

    fn lock(&self) -> PathBuf {
        self.beside_backup(".lock")
    }

    fn beside_backup(&self, suffix: &str) -> PathBuf {
        let mut p = self.backup.clone().into_os_string();
        p.push(suffix);
        p.into()
    }
}

/// The lock of the session that manages the file: held until [`Held::restore`], or until the
/// process ends however it ends.
#[derive(Debug)]
pub struct Held {
    _lock: std::fs::File,
    paths: ResolvPaths,
}

impl Held {
    /// Puts the original back (as [`restore`], as the session that holds the lock).
    pub fn restore(self) -> Result<Restored, ResolvError> {
        restore_held(&self.paths)
    }
}

/// Takes the lock of `paths` if no live session holds it (None: one does). Creates the state
/// directory.
fn hold(paths: &ResolvPaths) -> Result<Option<Held>, ResolvError> {
    let lock = paths.lock();
    if let Some(dir) = lock.parent() {
        io("create", dir, std::fs::create_dir_all(dir))?;
    }
    // Read-only when it exists: `flock` needs no more, and a user who may not write the
    // state (`ktx clean` without root beside a root session) still learns the file is in use.
    let opened = match std::fs::File::open(&lock) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock),
        r => r,
    };
    let file = io("open", &lock, opened)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held {
            _lock: file,
            paths: paths.clone(),
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => io("lock", &lock, Err(e)),
    }
}

/// The parts of a resolv.conf that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Parses resolv.conf text (unknown lines are ignored, like libc does).
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    conf.nameservers.push(ip);
                }
            }
            // the last search/domain line wins, as in libc
            Some("search" | "domain") => conf.search = words.map(str::to_owned).collect(),
            Some("options") => conf.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    conf
}

#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is managed by a running `ktx connect` (it holds {lock}); end that session first, or use --socks"
    )]
    InUse { path: PathBuf, lock: PathBuf },
}

/// What [`restore`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// No backup: nothing of ours to undo.
    NothingToRestore,
    /// The original is back.
    Restored,
    /// The file changed since ktx wrote it: left as it is; the original was kept at this path.
    ChangedSince { kept_backup: PathBuf },
    /// A running `ktx connect` manages the file: left as it is.
    InUse,
}

fn io<T>(op: &'static str, path: &Path, r: std::io::Result<T>) -> Result<T, ResolvError> {
    r.map_err(|source| ResolvError::Io {
        op,
        path: path.to_owned(),
        source,
    })
}

/// The managed file's text.
pub fn managed_text(
    original: &ResolvConf,
    resolver: IpAddr,
    cluster_search: &[String],
    backup: &Path,
) -> String {
    let mut search: Vec<&str> = cluster_search.iter().map(String::as_str).collect();
    search.extend(
        original
            .search
            .iter()
            .map(String::as_str)
            .filter(|s| !cluster_search.iter().any(|c| c == s)),
    );
    let mut out = format!(
        "{MARKER}; the original is in {}; `ktx clean` restores it after a crash\nnameserver {resolver}\n",
        backup.display()
    );
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !original.options.is_empty() {
        out.push_str(&format!("options {}\n", original.options.join(" ")));
    }
    out
}

/// What [`install`] found before managing the file.
#[derive(Debug)]
pub struct Installed {
    /// The machine's configuration before ktx (its nameservers are the resolver's upstreams).
    pub original: ResolvConf,
    /// What a crash-leftover restore did first.
    pub recovered: Restored,
    /// The session's lock; keep it for as long as the file is managed.
    pub held: Held,
}

/// Takes the lock, restores any leftover, backs the file up and writes the managed one.
/// `cluster_search` is `NS.svc.DOMAIN svc.DOMAIN DOMAIN`. [`ResolvError::InUse`] while another
/// session manages the file.
pub fn install(
    paths: &ResolvPaths,
    resolver: IpAddr,
    cluster_search: &[String],
) -> Result<Installed, ResolvError> {
    let held = hold(paths)?.ok_or_else(|| ResolvError::InUse {
        path: paths.resolv_conf.clone(),
        lock: paths.lock(),
    })?;
    let recovered = restore_held(paths)?;
    let original_text = io(
        "read",
        &paths.resolv_conf,
        std::fs::read_to_string(&paths.resolv_conf),
    )?;
    let original = parse(&original_text);
    if let Some(dir) = paths.backup.parent() {
        io("create", dir, std::fs::create_dir_all(dir))?;
    }
    let managed = managed_text(&original, resolver, cluster_search, &paths.backup);
    // Backup first (temp + rename: our own file), then the proof of what we write, then the
    // file itself; a crash between any two steps leaves something `restore` handles.
    write_atomic(&paths.backup, &original_text)?;
    write_atomic(&paths.managed(), &managed)?;
    io(
        "write",
        &paths.resolv_conf,
        std::fs::write(&paths.resolv_conf, &managed),
    )?;
    Ok(Installed {
        original,
        recovered,
        held,
    })
}

/// Puts the original back if the file is still exactly what ktx wrote and no running session
/// manages it ([`Restored::InUse`]).
pub fn restore(paths: &ResolvPaths) -> Result<Restored, ResolvError> {
    if !io("stat", &paths.backup, paths.backup.try_exists())? {
        // Nothing of ours (or a session that has not backed the file up yet): no lock needed.
        return Ok(Restored::NothingToRestore);
    }
    match hold(paths)? {
        Some(_held) => restore_held(paths),
        None => Ok(Restored::InUse),
    }
}

/// [`restore`] by the holder of the lock.
fn restore_held(paths: &ResolvPaths) -> Result<Restored, ResolvError> {
    let original = match std::fs::read_to_string(&paths.backup) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Restored::NothingToRestore)
        }
        Err(e) => return io("read", &paths.backup, Err(e)),
    };
    let managed = std::fs::read_to_string(paths.managed()).ok();
    let current = std::fs::read_to_string(&paths.resolv_conf).ok();
    // A crash after the backup but before the write leaves the original in place.
    let untouched = current.as_deref() == Some(original.as_str());
    if managed.is_some() && current == managed || untouched {
        if !untouched {
            io(
                "write",
                &paths.resolv_conf,
                std::fs::write(&paths.resolv_conf, &original),
            )?;
        }
        remove(&paths.managed())?;
        remove(&paths.backup)?;
        return Ok(Restored::Restored);
    }
    let mut kept = paths.backup.clone().into_os_string();
    kept.push(".orphaned");
    let kept = PathBuf::from(kept);
    io(
        "rename",
        &paths.backup,
        std::fs::rename(&paths.backup, &kept),
    )?;
    remove(&paths.managed())?;
    tracing::warn!(
        file = %paths.resolv_conf.display(),
        backup = %kept.display(),
        "resolv.conf changed since ktx managed it: left as it is"
    );
    Ok(Restored::ChangedSince { kept_backup: kept })
}

fn remove(path: &Path) -> Result<(), ResolvError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => io("remove", path, Err(e)),
        _ => Ok(()),
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), ResolvError> {
    let mut tmp = path.to_owned().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    io("write", &tmp, std::fs::write(&tmp, text))?;
    io("rename", path, std::fs::rename(&tmp, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_libc_reads() {
        let c = parse("# c\nnameserver 1.1.1.1\nnameserver fe80::1%eth0\nnameserver ::1 ; x\ndomain a\nsearch b.c d\noptions ndots:2 timeout:1\noptions edns0\nbogus\n");
        assert_eq!(
            c.nameservers,
            vec!["1.1.1.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert_eq!(c.search, vec!["b.c", "d"]);
        assert_eq!(c.options, vec!["ndots:2", "timeout:1", "edns0"]);
    }
}
